# rcache's unmarshal check (`rcache verify`): reads frames from stdin, each
# the expected co_filename then marshal bytes (both as a 4-byte
# little-endian length and the bytes), and answers one line per frame:
# "ok", or "bad " and what is wrong. A frame whose length is 0xFFFFFFFF
# asks for the answers so far to be flushed.
import marshal
import sys

CODE = type(compile("", "", "exec"))
SYNC = 0xFFFFFFFF
source, answers = sys.stdin.buffer, sys.stdout


def read(size):
    data = source.read(size)
    if len(data) != size:
        raise EOFError
    return data


def check(filename, data):
    try:
        code = marshal.loads(data)
    except Exception as error:
        return "bad does not unmarshal (%s: %s)" % (type(error).__name__, error)
    if type(code) is not CODE:
        return "bad unmarshals to %s, not to code" % type(code).__name__
    if code.co_filename != filename:
        return "bad holds the code of another key (%r)" % code.co_filename
    return "ok"


while True:
    try:
        size = int.from_bytes(read(4), "little")
        if size == SYNC:
            answers.flush()
            continue
        filename = read(size).decode()
        data = read(int.from_bytes(read(4), "little"))
    except EOFError:
        break
    answers.write(check(filename, data).replace("\n", " ") + "\n")
