"""Some arithmetic, so that there is bytecode worth caching."""

from functools import reduce


def factorial(n: int) -> int:
    return reduce(lambda acc, k: acc * k, range(1, n + 1), 1)


def fibonacci(count: int) -> list:
    numbers = [0, 1]
    while len(numbers) < count:
        numbers.append(numbers[-1] + numbers[-2])
    return numbers[:count]
