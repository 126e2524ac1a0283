"""rcache exec: this interpreter's source modules are served from rcache's store.

`rcache exec` puts this file's directory first on PYTHONPATH, so `site`
imports it as `sitecustomize` during start-up. It then hides itself: the
directory leaves `sys.path`, `os.environ` shows the caller's PYTHONPATH
(the C environment keeps ours, so child interpreters inherit the hook), and
the real `sitecustomize`, if there is one, is imported in its place.

Every source module, whichever finder made its SourceFileLoader, and every
source file `runpy.run_path` runs, is then asked of the rcache server over
a private Unix socket: a hit comes back as marshalled code with its real
filename; a miss is compiled here from the source (never from a pyc found
beside it), and the server stores its own compile for the next run. No pyc
is written beside any source.
When the server is gone or says something unexpected, imports fall back to
CPython's own loader, with one warning on stderr.
"""

# The -c command `rcache exec SCRIPT` runs instead of SCRIPT (see run_main).
BOOT = "__import__('sys').modules['_rcache_exec'].run_main()"

_HELLO = b"RCX1"
_HIT = 0x48  # "H": marshalled code follows
_MISS = object()


class _Client:
    """One connection per process, opened on first use; forked children
    open their own."""

    def __init__(self, path, os, sys, marshal, _thread):
        self.path = path
        self.os = os
        self.sys = sys
        self.marshal = marshal
        self.allocate_lock = _thread.allocate_lock
        self.lock = _thread.allocate_lock()
        self.pid = os.getpid()
        self.sock = None
        self.enabled = True
        self.hello = (
            _HELLO
            + _external(sys).MAGIC_NUMBER
            + bytes([len(sys.implementation.cache_tag)])
            + sys.implementation.cache_tag.encode()
        )
        self.level = sys.flags.optimize

    def code(self, path):
        """Code for the source at `path`, `_MISS`, or None to fall back."""
        if not self.enabled:
            return None
        encoded = self.os.fsencode(path)
        request = bytes([self.level]) + len(encoded).to_bytes(4, "little") + encoded
        pid = self.os.getpid()
        if pid != self.pid:
            # A forked child: the parent's connection is the parent's, and
            # another thread may have held the lock at the fork.
            # (os.register_at_fork would do, but crashes 3.8 at exit.)
            self.pid = pid
            self.lock = self.allocate_lock()
            self.sock = None
        with self.lock:
            try:
                if self.sock is None:
                    self.connect()
                    if not self.enabled:
                        return None
                self.sock.sendall(request)
                status, body = self.receive()
            except (OSError, ValueError) as err:
                self.fail(err)
                return None
        if status != _HIT:
            return _MISS
        try:
            return self.marshal.loads(body)
        except (EOFError, ValueError, TypeError) as err:
            self.fail(err)
            return None

    def connect(self):
        import _socket

        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
            sock.sendall(self.hello)
            answer = sock.recv(1)
        except OSError:
            sock.close()
            raise
        if answer != b"Y":
            # "E", a length and why; the server closes the connection after.
            chunks = []
            while answer == b"E":
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            sock.close()
            message = b"".join(chunks)[4:].decode("utf-8", "replace")
            raise ValueError(message or "a bad greeting from the server")
        self.sock = sock

    def receive(self):
        sock = self.sock
        data = sock.recv(65536)
        while len(data) < 5:
            more = sock.recv(65536)
            if not more:
                raise ValueError("the server closed the connection")
            data += more
        size = int.from_bytes(data[1:5], "little")
        if len(data) - 5 < size:
            body = bytearray(size)
            view = memoryview(body)
            have = len(data) - 5
            view[:have] = data[5:]
            while have < size:
                count = sock.recv_into(view[have:])
                if not count:
                    raise ValueError("the server closed the connection mid-reply")
                have += count
            return data[0], body
        return data[0], data[5 : 5 + size]

    def fail(self, err):
        if self.enabled:
            self.enabled = False
            try:
                self.sys.stderr.write(
                    "rcache: lost the code server (%s); imports fall back to Python's own\n" % (err,)
                )
            except Exception:
                pass
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


def _external(sys):
    """importlib's path machinery, frozen into every interpreter."""
    return sys.modules["_frozen_importlib_external"]


def _hide(os, sys, hook_dir):
    """Leaves sys.path, os.environ and the pycache prefix as the caller had
    them."""
    while hook_dir in sys.path:
        sys.path.remove(hook_dir)
    sys.path_importer_cache.pop(hook_dir, None)
    environ = os.environ
    key = environ.encodekey("PYTHONPATH")
    original = environ.get("RCACHE_EXEC_PYTHONPATH")
    # Only the mapping changes; the C environment keeps rcache's entry, so
    # that children started with the inherited environment are served too.
    if original is None:
        environ._data.pop(key, None)
    else:
        environ._data[key] = environ.encodevalue(original)
    startup = environ.get("RCACHE_EXEC_PYCACHEPREFIX")
    if startup:
        environ._data.pop(environ.encodekey("PYTHONPYCACHEPREFIX"), None)
        if getattr(sys, "pycache_prefix", None) == startup:
            sys.pycache_prefix = None
            _forget_startup_prefix(os, sys, startup)


def _forget_startup_prefix(os, sys, startup):
    """The modules imported so far know their pyc under rcache's start-up
    prefix: they get the one CPython would have named."""
    cache_from_source = _external(sys).cache_from_source
    inside = startup + os.sep
    for module in list(sys.modules.values()):
        spec = getattr(module, "__spec__", None)
        cached = getattr(spec, "cached", None)
        if not (cached and cached.startswith(inside) and spec.origin):
            continue
        try:
            cached = cache_from_source(spec.origin)
        except (NotImplementedError, ValueError):
            cached = None
        spec.cached = cached
        if getattr(module, "__cached__", None) is not None:
            module.__cached__ = cached


def _pass_on_to_children(os, sys, hook_dir):
    """Children given an explicit environment that still carries rcache's
    variables get rcache's PYTHONPATH entry (and start-up pycache prefix)
    back, as inherited ones do."""
    pathsep = os.pathsep

    def with_hook_mapping(env):
        if env is None or "RCACHE_EXEC_SOCKET" not in env:
            return env
        current = env.get("PYTHONPATH")
        startup = env.get("RCACHE_EXEC_PYCACHEPREFIX")
        has_hook = current is not None and current.split(pathsep)[0] == hook_dir
        if has_hook and (not startup or "PYTHONPYCACHEPREFIX" in env):
            return env
        env = dict(env)
        if startup and "PYTHONPYCACHEPREFIX" not in env:
            env["PYTHONPYCACHEPREFIX"] = startup
        if not has_hook:
            if current is None:
                env.pop("RCACHE_EXEC_PYTHONPATH", None)
                env["PYTHONPATH"] = hook_dir
            else:
                env["RCACHE_EXEC_PYTHONPATH"] = current
                env["PYTHONPATH"] = hook_dir + pathsep + current if current else hook_dir
        return env

    hook = os.fsencode(hook_dir)

    def with_hook_list(env_list):
        if env_list is None or not any(item.startswith(b"RCACHE_EXEC_SOCKET=") for item in env_list):
            return env_list
        current = startup = None
        has_prefix = False
        for item in env_list:
            if item.startswith(b"PYTHONPATH="):
                current = item[len(b"PYTHONPATH="):]
            elif item.startswith(b"RCACHE_EXEC_PYCACHEPREFIX="):
                startup = item[len(b"RCACHE_EXEC_PYCACHEPREFIX="):]
            elif item.startswith(b"PYTHONPYCACHEPREFIX="):
                has_prefix = True
        has_hook = current is not None and current.split(os.fsencode(pathsep))[0] == hook
        if has_hook and (not startup or has_prefix):
            return env_list
        kept = list(env_list)
        if startup and not has_prefix:
            kept.append(b"PYTHONPYCACHEPREFIX=" + startup)
        if has_hook:
            return kept
        kept = [item for item in kept if not item.startswith((b"PYTHONPATH=", b"RCACHE_EXEC_PYTHONPATH="))]
        if current is None:
            kept.append(b"PYTHONPATH=" + hook)
        else:
            kept.append(b"RCACHE_EXEC_PYTHONPATH=" + current)
            kept.append(b"PYTHONPATH=" + hook + (os.fsencode(pathsep) + current if current else b""))
        return kept

    def wrap_env_at(function, index, convert):
        def wrapper(*args, **kwargs):
            if len(args) > index:
                args = args[:index] + (convert(args[index]),) + args[index + 1 :]
            elif "env" in kwargs:
                kwargs["env"] = convert(kwargs["env"])
            return function(*args, **kwargs)

        wrapper.__name__ = function.__name__
        wrapper.__qualname__ = getattr(function, "__qualname__", function.__name__)
        wrapper.__doc__ = function.__doc__
        return wrapper

    for name in ("execve", "posix_spawn", "posix_spawnp"):
        function = getattr(os, name, None)
        if function is not None:
            setattr(os, name, wrap_env_at(function, 2, with_hook_mapping))
    import _posixsubprocess

    _posixsubprocess.fork_exec = wrap_env_at(_posixsubprocess.fork_exec, 5, with_hook_list)
    subprocess = sys.modules.get("subprocess")
    if subprocess is not None and hasattr(subprocess, "_fork_exec"):
        # 3.13 binds fork_exec when subprocess is imported (here, by a .pth).
        subprocess._fork_exec = _posixsubprocess.fork_exec


def _install_loader(client):
    """Serves every SourceFileLoader of the process, whoever made it (path
    finders, `spec_from_file_location`, an editable install's finder, a
    plugin system): `get_code` of the class itself asks rcache, so loaders,
    specs and `type(spec.loader)` stay CPython's own. A subclass that
    overrides how code is made (`get_code`, `source_to_code`, `get_data`,
    `path_stats`) keeps CPython's `get_code`. No pyc is ever written beside
    a source."""
    import sys

    SourceFileLoader = _external(sys).SourceFileLoader
    original = SourceFileLoader.get_code
    plain = [
        (name, getattr(SourceFileLoader, name))
        for name in ("source_to_code", "get_data", "path_stats")
    ]
    makes_its_own = {}

    def get_code(self, fullname):
        cls = type(self)
        own = makes_its_own.get(cls)
        if own is None:
            own = cls.get_code is not get_code or any(
                getattr(cls, name) is not function for name, function in plain
            )
            makes_its_own[cls] = own
        if own:
            return original(self, fullname)
        path = self.get_filename(fullname)
        code = client.code(path)
        if code is _MISS:
            # Compiled from the source itself: a pyc beside it is never
            # trusted while rcache serves.
            return self.source_to_code(self.get_data(path), path)
        if code is None:
            return original(self, fullname)
        return code

    # CPython trims the import system's own frames from tracebacks (a
    # SyntaxError in an imported module shows only the importer and the
    # module) by their filename: get_code must look like one of them.
    get_code.__code__ = get_code.__code__.replace(co_filename="<frozen importlib._bootstrap_external>")
    get_code.__qualname__ = original.__qualname__
    SourceFileLoader.get_code = get_code

    def _cache_bytecode(self, source_path, bytecode_path, data):
        """rcache's store is the cache: nothing is written beside sources."""

    SourceFileLoader._cache_bytecode = _cache_bytecode


def _serve_run_path(client, os, sys):
    """`runpy.run_path` of a source file (and so multiprocessing's spawn
    children re-running `__main__`) gets its code from the store, as the
    script does. runpy is patched when it is first imported: a module
    rcache imported itself would show in `sys.modules`."""
    if "runpy" in sys.modules:
        _serve_runpy(client, os, sys, sys.modules["runpy"])
        return
    import _imp

    if _imp.is_frozen("runpy"):
        owner = sys.modules["_frozen_importlib"].FrozenImporter
        wrap = staticmethod
    else:
        owner = _external(sys).SourceFileLoader
        wrap = None
    inherited = "exec_module" not in owner.__dict__
    original = owner.__dict__.get("exec_module")
    unwrapped = owner.exec_module

    def exec_module(*args):
        unwrapped(*args)
        module = args[-1]
        if getattr(module, "__name__", None) == "runpy":
            if inherited:
                del owner.exec_module
            else:
                owner.exec_module = original
            _serve_runpy(client, os, sys, module)

    exec_module.__code__ = exec_module.__code__.replace(co_filename="<frozen importlib._bootstrap_external>")
    owner.exec_module = wrap(exec_module) if wrap else exec_module


def _serve_runpy(client, os, sys, runpy):
    original = getattr(runpy, "_get_code_from_file", None)
    if original is None:
        return
    returns_name = original.__code__.co_argcount == 2  # (run_name, fname) before 3.13
    magic = _external(sys).MAGIC_NUMBER

    def _get_code_from_file(*args):
        fname = args[-1]
        code = _script_code(client, os, sys, fname, magic)
        if code is None:
            return original(*args)
        return (code, fname) if returns_name else code

    runpy._get_code_from_file = _get_code_from_file


def _script_code(client, os, sys, fname, magic):
    """The code of the source file `fname` as `compile(source, fname)`
    makes it, from the store when it has it; None for what is not a source
    file rcache can serve (a pyc, an unreadable path)."""
    import io

    path = os.path.abspath(os.fsdecode(fname))
    try:
        with io.open_code(path) as file:
            if file.read(len(magic)) == magic:
                return None
    except OSError:
        return None
    code = client.code(path)
    if code is None or code is _MISS:
        with io.open_code(path) as file:
            return compile(file.read(), fname, "exec")
    return code if code.co_filename == fname else _renamed(code, fname)


def _renamed(code, filename):
    """`code` and every code object inside it, with `co_filename` set."""
    consts = tuple(
        _renamed(const, filename) if type(const) is type(code) else const for const in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


def _main_runner(client, os, sys):
    """`run_main`: runs SCRIPT as CPython would, its code from the store."""

    def run_main():
        argv = sys.argv
        del argv[0]  # "-c": the script and its arguments remain
        script = argv[0]
        orig_argv = getattr(sys, "orig_argv", None)
        if orig_argv is not None:
            for index in range(len(orig_argv) - 1):
                if orig_argv[index] == "-c" and orig_argv[index + 1] == BOOT:
                    del orig_argv[index : index + 2]
                    break
        # CPython 3.9+ makes the script absolute by joining, not normalizing.
        if sys.version_info >= (3, 9) and not os.path.isabs(script):
            filename = os.getcwd() + os.sep + script
        else:
            filename = script
        if sys.path and sys.path[0] == "":
            sys.path[0] = os.path.dirname(os.path.realpath(script))
        main = sys.modules["__main__"]
        namespace = main.__dict__
        namespace["__file__"] = filename
        namespace["__cached__"] = None
        namespace["__loader__"] = _external(sys).SourceFileLoader("__main__", filename)
        code = None
        try:
            code = client.code(filename)
            if code is None or code is _MISS:
                with open(filename, "rb") as file:
                    source = file.read()
                code = compile(source, filename, "exec", dont_inherit=True)
            exec(code, namespace)
        except SystemExit:
            raise
        except BaseException as error:
            _report_as_python_would(sys, error, code)

    return run_main


def _report_as_python_would(sys, error, code):
    """Prints an uncaught exception with the traceback starting at the
    script's frame, then lets CPython exit as it would (status 1, or death
    by SIGINT after KeyboardInterrupt) without printing it again."""
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_frame.f_code is not code:
        traceback = traceback.tb_next
    error.__traceback__ = traceback
    hook = sys.excepthook
    hook(type(error), error, traceback)

    def printed_already(*args):
        sys.excepthook = hook

    sys.excepthook = printed_already
    raise error.with_traceback(traceback)


def _install():
    import os
    import sys

    environ = os.environ
    hook_dir = environ.get("RCACHE_EXEC_HOOK")
    socket_path = environ.get("RCACHE_EXEC_SOCKET")
    if hook_dir:
        _hide(os, sys, hook_dir)
        _pass_on_to_children(os, sys, hook_dir)
    import marshal
    import _thread

    client = _Client(socket_path or "", os, sys, marshal, _thread)
    if not socket_path or client.level not in (0, 1, 2):
        client.enabled = False
    _install_loader(client)
    _serve_run_path(client, os, sys)
    runner = type(sys)("_rcache_exec")
    runner.run_main = _main_runner(client, os, sys)
    sys.modules["_rcache_exec"] = runner
    # The real sitecustomize, if any, runs now, served like everything else.
    del sys.modules["sitecustomize"]
    if _external(sys).PathFinder.find_spec("sitecustomize") is None:
        return False
    __import__("sitecustomize")
    return True


def _cache_own_bytecode(code):
    """Writes this module's pyc once, even under PYTHONDONTWRITEBYTECODE:
    it lives in rcache's private directory (its start-up pycache prefix,
    unless the caller has one), and compiling this file at every start
    would cost more than the rest of the hook."""
    import os
    import sys

    spec = globals().get("__spec__")
    prefix = getattr(sys, "pycache_prefix", None)
    if spec is None or not spec.cached or (prefix and prefix != os.environ.get("RCACHE_EXEC_PYCACHEPREFIX")):
        return
    cached = spec.cached
    if os.path.exists(cached):
        return
    external = _external(sys)
    try:
        stat = os.stat(spec.origin)
        os.makedirs(os.path.dirname(cached), mode=0o700, exist_ok=True)
        data = external._code_to_timestamp_pyc(code, stat.st_mtime, stat.st_size)
        external._write_atomic(cached, data, 0o600)
    except OSError:
        pass


_cache_own_bytecode(__import__("sys")._getframe().f_code)
if not _install():
    # As if this module did not exist: `site` ignores exactly this error.
    raise ImportError("No module named 'sitecustomize'", name="sitecustomize")
