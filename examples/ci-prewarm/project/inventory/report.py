"""Plain-text reports of a stock."""


def render(stock):
    width = max((len(name) for name in stock.items), default=0)
    lines = [f"{name:<{width}}  {count:>5}" for name, count in sorted(stock.items.items())]
    lines.append(f"{'total':<{width}}  {stock.total():>5}")
    return "\n".join(lines)
