"""Quantities of items, by name."""

from dataclasses import dataclass, field


@dataclass
class Stock:
    items: dict = field(default_factory=dict)

    def add(self, name, quantity=1):
        self.items[name] = self.items.get(name, 0) + quantity
        return self

    def remove(self, name, quantity=1):
        left = self.items.get(name, 0) - quantity
        if left < 0:
            raise ValueError(f"only {self.items.get(name, 0)} {name} in stock")
        self.items[name] = left
        return self

    def total(self):
        return sum(self.items.values())
