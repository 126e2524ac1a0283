# rcache interpreter probe (embedded in the rcache binary, run as `python -S -s -c`).
# Prints `name=value` lines. Written to run on any Python, 2.7 included, so
# that an unsupported interpreter is refused with a clear message.
import sys

implementation = getattr(sys, "implementation", None)
lines = [
    "implementation=" + (implementation.name if implementation else "unknown"),
    "version=%d.%d.%d" % tuple(sys.version_info[:3]),
    "executable=" + (sys.executable or ""),
    "cache_tag=" + ((implementation and implementation.cache_tag) or ""),
]
external = sys.modules.get("_frozen_importlib_external")
if external is not None:
    import binascii

    lines.append("magic=" + binascii.hexlify(external.MAGIC_NUMBER).decode("ascii"))
    try:
        import _imp

        digest = _imp.source_hash(external._RAW_MAGIC_NUMBER, b"rcache source_hash probe")
        lines.append("raw_magic=%d" % external._RAW_MAGIC_NUMBER)
        lines.append("source_hash=" + binascii.hexlify(digest).decode("ascii"))
    except (ImportError, AttributeError):
        pass
sys.stdout.write("\n".join(lines) + "\n")
