# rcache compile worker (embedded in the rcache binary, run as `python -S -s -c`).
#
# Reads requests from stdin and answers on stdout, as length-prefixed frames
# (u32 big-endian length, then the body); see src/compile/protocol.rs for the
# layout. Each level of each request is compiled in a child forked from this
# process, which itself compiles nothing but an empty source (see the end):
# CPython's marshal output depends on what the process compiled and interned
# before, so a fresh fork per compile gives the bytes a pristine interpreter
# gives.
#
# Only modules that `python -S -s` has loaded at start-up (`posix`, `marshal`,
# `sys`, `time`, the frozen importlib) and the built-in `gc` are used: a module whose constants
# are alive here compiles to other bytes for its own source file. For the same
# reason no name or constant below is a single character.

import gc
import marshal
import posix
import sys
import time

external = sys.modules["_frozen_importlib_external"]
source_to_code = external.SourceLoader.source_to_code
code_to_pyc = external._code_to_timestamp_pyc
PYC_HEADER_SIZE = 16
READY = b"RCW1"
REPLY_TAG = b"RCWR"

STATUS_OK = 0
STATUS_ERROR = 1
STATUS_TRANSIENT = 2
# Errors that say something about this run rather than about the source.
TRANSIENT_ERRORS = (MemoryError, RecursionError, SystemError, OSError)

FAULT_CRASH = 1
FAULT_HANG = 2
FAULT_GARBAGE = 3


def read_exact(count):
    chunks = []
    while count:
        chunk = posix.read(0, min(count, 1048576))
        if not chunk:
            return None
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view):]


def u32(number):
    return number.to_bytes(4, "big")


def text_field(text):
    data = text.encode("utf-8", "surrogatepass")
    return u32(len(data)) + data


class WarningSink:
    """Collects what compile() prints as warnings, instead of sys.stderr."""

    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)
        return len(text)

    def flush(self):
        pass


def error_field(status, error):
    line = getattr(error, "lineno", None) if isinstance(error, SyntaxError) else None
    column = getattr(error, "offset", None) if isinstance(error, SyntaxError) else None
    message = error.msg if isinstance(error, SyntaxError) else str(error)
    return (
        bytes((status,))
        + text_field(type(error).__name__)
        + text_field(str(message))
        + u32(line if isinstance(line, int) and line > 0 else 0)
        + u32(column if isinstance(column, int) and column > 0 else 0)
    )


def compile_level(source, filename, level):
    """Runs in a forked child: compile like the import system does."""
    sink = WarningSink()
    sys.stderr = sink
    try:
        code = source_to_code(None, source, filename, _optimize=level)
        pyc = code_to_pyc(code)
    except TRANSIENT_ERRORS as error:
        return error_field(STATUS_TRANSIENT, error)
    except Exception as error:
        return error_field(STATUS_ERROR, error)
    body = pyc[PYC_HEADER_SIZE:]
    return bytes((STATUS_OK,)) + u32(len(body)) + body + text_field("".join(sink.parts))


def crashed_field(status):
    if posix.WIFSIGNALED(status):
        message = "compiler process killed by signal %d" % posix.WTERMSIG(status)
    else:
        message = "compiler process exited with status %d" % posix.WEXITSTATUS(status)
    return bytes((STATUS_TRANSIENT,)) + text_field("WorkerCrash") + text_field(message) + u32(0) + u32(0)


def run_forked(source, filename, level):
    reader, writer = posix.pipe()
    pid = posix.fork()
    if pid == 0:
        try:
            posix.close(reader)
            write_all(writer, compile_level(source, filename, level))
            posix._exit(0)
        finally:
            posix._exit(70)
    posix.close(writer)
    chunks = []
    while True:
        chunk = posix.read(reader, 1048576)
        if not chunk:
            break
        chunks.append(chunk)
    posix.close(reader)
    status = posix.waitpid(pid, 0)[1]
    if status != 0 or not chunks:
        return crashed_field(status)
    return b"".join(chunks)


def inject_fault(fault):
    if fault == FAULT_CRASH:
        posix.abort()
    if fault == FAULT_HANG:
        time.sleep(1e9)
    if fault == FAULT_GARBAGE:
        write_all(1, b"this is not a frame\n")


def serve():
    write_all(1, READY)
    while True:
        head = read_exact(4)
        if head is None:
            return
        body = read_exact(int.from_bytes(head, "big"))
        if body is None:
            return
        request_id = body[:8]
        fault = body[8]
        level_count = body[9]
        offset = 10
        targets = []
        for _ in range(level_count):
            level = body[offset]
            name_size = int.from_bytes(body[offset + 1 : offset + 5], "big")
            offset += 5 + name_size
            targets.append((level, body[offset - name_size : offset].decode("utf-8", "surrogateescape")))
        source = body[offset:]
        inject_fault(fault)
        reply = [request_id]
        for level, filename in targets:
            reply.append(run_forked(source, filename, level))
        reply = b"".join(reply)
        write_all(1, REPLY_TAG + u32(len(reply)) + reply)


# Every compile runs in a fork that lives for one file: collecting garbage
# there only touches (and so copies) pages shared with this process, which
# made each compile about 7% slower here.
gc.disable()
# The first compile() of a process builds the `ast` node types (about 120
# heap types and their interned field names) before it parses anything:
# ~3 ms that every fork would pay again. Compiling an empty source here does
# that once, and leaves each fork where a pristine interpreter's first
# compile() stands after that step; the file name is no identifier, so it
# interns nothing a source could use.
compile(b"", "<rcache worker>", "exec", dont_inherit=True)
serve()
