import json
import sys


def main():
    modules = sorted(name for name in sys.modules if name == "app" or name.startswith("app."))
    print(json.dumps({"greeting": "hello from a read-only deployment", "app_modules": modules}))
