import unittest

from inventory import Stock, render


class StockTest(unittest.TestCase):
    def test_add_and_remove(self):
        stock = Stock().add("bolt", 3).remove("bolt")
        self.assertEqual(stock.total(), 2)

    def test_cannot_go_negative(self):
        with self.assertRaises(ValueError):
            Stock().remove("nut")

    def test_report(self):
        self.assertIn("total", render(Stock().add("nut", 2)))


if __name__ == "__main__":
    unittest.main()
