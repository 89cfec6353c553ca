"""HyOps driver plug-in ``iac/proxmox-native``: runs module requests through ``hyops-pve driver``.

hyops calls ``register(registry)`` through the ``hyops.drivers`` entry-point group. The
registered driver serialises each request to JSON, runs the ``hyops-pve`` binary (``$HYOPS_PVE_BIN``
or ``hyops-pve`` on ``PATH``) with the request on its stdin, and returns the result document the
binary prints on stdout. The binary's stderr (per-VM progress, logs) is pumped line by line, on
its own thread so a full pipe never blocks the binary, into the run's evidence
(``hyops-pve.log`` and ``hyops_pve_<command>.stderr.txt``) and, with ``hyops -v``
(``HYOPS_VERBOSE=1``), onto hyops' stderr.

Every evidence file the plug-in writes is written atomically (a private temp file beside it,
fsync, rename): a full or failing disk leaves it absent or as it was, never truncated; the live
``hyops-pve.log`` is appended whole lines only (a failed write is cut back). Such a
loss never stops the call: the stderr pump keeps draining and relaying, the result the binary
printed reaches hyops whole, and each lost file is one warning in that result (and one line on
hyops' stderr) naming the file and the OS error. No plug-in thread raises.

A missing binary, one that cannot start, crashes, times out or prints no result document
becomes an error result whose one-line message names ``HYOPS_PVE_BIN``; the plug-in never
raises into hyops (except to pass on the operator's Ctrl-C after the binary has stopped).
hyops owns the module state; neither the plug-in nor the binary writes ``latest.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

DRIVER_REF = "iac/proxmox-native"
BIN_ENV = "HYOPS_PVE_BIN"
TIMEOUT_ENV = "HYOPS_PVE_DRIVER_TIMEOUT_S"
PROFILE = "hyops-pve@v1"
PACK_ID = "hyops-pve/platform-vm@v1"

# How long a cancelled (Ctrl-C) or timed-out binary gets to record its cancellation and
# print its result before it is terminated.
_GRACE_S = 30.0

_ALLOWED_EXEC_KEYS = {"driver", "profile", "pack_ref", "hooks"}
_ALLOWED_PACK_REF_KEYS = {"id"}
_ALLOWED_HOOKS_KEYS = {"export_infra"}
_ALLOWED_EXPORT_KEYS = {"enabled", "target", "strict", "push_to_netbox"}

_FIX = f"set {BIN_ENV} to the hyops-pve executable or put hyops-pve on PATH"


def register(registry: Any) -> None:
    """Entry point of the ``hyops.drivers`` group."""
    registry.register(
        DRIVER_REF,
        run,
        source="plugin:hyops-pve",
        execution_validator=validate_execution,
    )


def _require_mapping(value: Any, *, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{field} must be a mapping")
    return value


def _reject_unknown_keys(payload: dict[str, Any], *, field: str, allowed: set[str]) -> None:
    unknown = sorted(str(k) for k in payload.keys() if str(k) not in allowed)
    if unknown:
        raise ValueError(f"{field} has unknown keys: {', '.join(unknown)}")


def validate_execution(raw_exec: dict[str, Any]) -> None:
    """``spec.execution`` of a module run by this driver: the keys the Terragrunt driver
    accepts (``driver, profile, pack_ref{id}, hooks{export_infra{enabled, target, strict,
    push_to_netbox}}``), so a spec moves between the two drivers by changing ``driver``."""
    exec_map = _require_mapping(raw_exec, field="spec.execution")
    _reject_unknown_keys(exec_map, field="spec.execution", allowed=_ALLOWED_EXEC_KEYS)
    driver = str(exec_map.get("driver") or "").strip()
    if driver and driver != DRIVER_REF:
        raise ValueError(f"spec.execution.driver must be {DRIVER_REF} for this validator, got {driver}")
    if "pack_ref" in exec_map:
        pack_ref = _require_mapping(exec_map.get("pack_ref"), field="spec.execution.pack_ref")
        _reject_unknown_keys(pack_ref, field="spec.execution.pack_ref", allowed=_ALLOWED_PACK_REF_KEYS)
    raw_hooks = exec_map.get("hooks")
    if raw_hooks is None:
        return
    hooks = _require_mapping(raw_hooks, field="spec.execution.hooks")
    _reject_unknown_keys(hooks, field="spec.execution.hooks", allowed=_ALLOWED_HOOKS_KEYS)
    raw_export = hooks.get("export_infra")
    if raw_export is None or isinstance(raw_export, bool):
        return
    export_map = _require_mapping(raw_export, field="spec.execution.hooks.export_infra")
    _reject_unknown_keys(
        export_map,
        field="spec.execution.hooks.export_infra",
        allowed=_ALLOWED_EXPORT_KEYS,
    )


def find_binary(env: dict[str, str] | None = None) -> tuple[str | None, str]:
    """The hyops-pve executable: ``$HYOPS_PVE_BIN`` when set, else ``hyops-pve`` on ``PATH``.
    Returns ``(path, "")`` or ``(None, one-line error naming HYOPS_PVE_BIN)``."""
    env = os.environ if env is None else env
    configured = str(env.get(BIN_ENV) or "").strip()
    if configured:
        p = Path(configured).expanduser()
        if p.is_file() and os.access(p, os.X_OK):
            return str(p), ""
        return None, f"{BIN_ENV}={configured} is not an executable file: {_FIX}"
    found = shutil.which("hyops-pve", path=env.get("PATH"))
    if found:
        return found, ""
    return None, f"hyops-pve binary not found ({BIN_ENV} is unset and hyops-pve is not on PATH): {_FIX}"


def _redactor() -> Callable[[str], str]:
    try:
        from hyops.runtime.redact import redact_text  # type: ignore

        return redact_text
    except Exception:  # hyops absent (plug-in tests): our binary prints no secrets anyway
        return lambda s: s


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _command_name(request: dict[str, Any]) -> str:
    c = str(request.get("command") or "").strip().lower()
    return "apply" if c == "deploy" else (c or "unknown")


def _lost(path: Path, exc: BaseException) -> str:
    """The one-line warning for an evidence file the plug-in could not write."""
    if isinstance(exc, OSError) and exc.errno is not None:
        why = f"{os.strerror(exc.errno)} (errno {exc.errno})"
    else:
        why = _one_line(f"{type(exc).__name__}: {exc}")
    return (
        f"hyops-pve plug-in: evidence file not written: {path}: {why}; "
        "the file is absent or as before, the driver result is unaffected"
    )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(directory: Path) -> None:
    """Best effort: makes a rename durable; some filesystems refuse fsync on a directory."""
    try:
        dfd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


class _AtomicFile:
    """One evidence file written atomically: a private (0600) temp file beside it, written
    as the call goes on, then fsync and rename over the target. A failed write or rename
    removes the temp file and leaves the target as it was (absent or its previous content),
    never truncated; it is recorded once in ``lost`` and every later write is a no-op.
    Nothing here raises."""

    def __init__(self, path: Path, lost: list[str], *, keep_previous: bool = False) -> None:
        self.path = path
        self._lost = lost
        self._fd: int | None = None
        self._tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # mkstemp creates the file with mode 0600: evidence stays private.
            self._fd, self._tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
            if keep_previous:
                try:
                    with open(path, "rb") as prev:
                        while True:
                            block = prev.read(1 << 16)
                            if not block:
                                break
                            _write_all(self._fd, block)
                except FileNotFoundError:
                    pass
        except Exception as exc:  # OSError mostly; never into hyops
            self._fail(exc)

    def write(self, text: str) -> None:
        if self._fd is None:
            return
        try:
            _write_all(self._fd, text.encode("utf-8", errors="replace"))
        except Exception as exc:
            self._fail(exc)

    def commit(self) -> bool:
        """fsync and rename over the target; ``False`` when the file was not written."""
        if self._fd is None or self._tmp is None:
            return False
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            os.replace(self._tmp, self.path)
            self._tmp = None
        except Exception as exc:
            self._fail(exc)
            return False
        _fsync_dir(self.path.parent)
        return True

    def _fail(self, exc: BaseException) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
            self._tmp = None
        self._lost.append(_lost(self.path, exc))


def _open_append(path: Path) -> int:
    """The live log's descriptor (a seam the plug-in's tests replace to fake a full disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        pass
    return fd


class _AppendLog:
    """``hyops-pve.log``, appended to live (operators and tests follow it during a call).
    Each write is whole or undone: a failed write is cut back to the size before it, so the
    log keeps its earlier lines and never ends in half a line; the loss is recorded once in
    ``lost`` and later writes are no-ops. Nothing here raises."""

    def __init__(self, path: Path, lost: list[str]) -> None:
        self.path = path
        self._lost = lost
        self._fd: int | None = None
        try:
            self._fd = _open_append(path)
        except Exception as exc:
            self._fail(exc, None)

    def write(self, text: str) -> None:
        if self._fd is None:
            return
        size: int | None = None
        try:
            size = os.fstat(self._fd).st_size
            _write_all(self._fd, text.encode("utf-8", errors="replace"))
        except Exception as exc:
            self._fail(exc, size)

    def commit(self) -> bool:
        if self._fd is None:
            return False
        try:
            os.fsync(self._fd)
        except OSError:
            pass  # every line is already written whole; fsync only makes it durable
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._fd = None
        return True

    def _fail(self, exc: BaseException, size: int | None) -> None:
        if self._fd is not None:
            if size is not None:
                try:
                    os.ftruncate(self._fd, size)
                except OSError:
                    pass
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        self._lost.append(_lost(self.path, exc).replace("the file is absent or as before", "the log keeps its earlier whole lines"))


def _write_private(path: Path, text: str, lost: list[str] | None = None) -> bool:
    """Write one evidence file atomically (see :class:`_AtomicFile`), mode 0600. A failure
    is appended to ``lost`` as one warning line; never raises."""
    sink: list[str] = [] if lost is None else lost
    f = _AtomicFile(path, sink)
    f.write(text)
    return f.commit()


def _error_result(
    request: dict[str, Any], message: str, evidence: Path | None, lost: list[str] | None = None
) -> dict[str, Any]:
    """The error result handed to hyops; ``lost`` (evidence files not written) become its
    warnings, and so does ``driver_result.json`` itself when it cannot be written."""
    lost = [] if lost is None else lost
    result = {
        "status": "error",
        "run_id": str(request.get("run_id") or ""),
        "command": _command_name(request),
        "driver": {"ref": DRIVER_REF, "profile": PROFILE, "pack_id": PACK_ID},
        "normalized_outputs": {},
        "warnings": [],
        "backend_binding": {"mode": "local"},
        "error": _one_line(message),
    }
    if evidence is not None:
        _write_private(evidence / "driver_result.json", json.dumps(result, indent=2, sort_keys=True) + "\n", lost)
    _report_lost(result, lost)
    return result


def _report_lost(result: dict[str, Any], lost: list[str]) -> None:
    """Each evidence loss once: a warning in the result hyops gets, and a line on hyops'
    stderr (the result may never be recorded when hyops' own disk is full too)."""
    if not lost:
        return
    warnings = result.get("warnings")
    result["warnings"] = (list(warnings) if isinstance(warnings, list) else []) + list(lost)
    for line in lost:
        try:
            if sys.stderr is not None:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
        except Exception:  # hyops' own stream is gone: the warning still travels in the result
            pass


def _verbose() -> bool:
    return str(os.environ.get("HYOPS_VERBOSE") or "").strip().lower() in {"1", "true", "yes", "on"}


def _timeout_s() -> tuple[float | None, str]:
    """``$HYOPS_PVE_DRIVER_TIMEOUT_S``: ``(seconds, "")``, ``(None, "")`` when unset (no
    limit), or ``(None, one-line error naming the variable)`` for a value that is not a
    positive number of seconds (never silently no limit)."""
    raw = str(os.environ.get(TIMEOUT_ENV) or "").strip()
    if not raw:
        return None, ""
    try:
        v = float(raw)
    except ValueError:
        v = float("nan")
    if not math.isfinite(v) or v <= 0:
        return None, f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds (unset it for no limit)"
    return v, ""


def _stop(proc: subprocess.Popen, grace: float) -> None:
    """SIGINT (the binary records a cancellation and prints its result), then SIGTERM,
    then SIGKILL."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0)):
        if proc.poll() is not None:
            return
        try:
            proc.send_signal(sig)
        except OSError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:
            pass
        proc.wait()


def run(request: dict[str, Any]) -> dict[str, Any]:
    """The ``iac/proxmox-native`` driver function hyops calls with one request."""
    raw_evidence = str(request.get("evidence_dir") or "").strip() if isinstance(request, dict) else ""
    evidence = Path(raw_evidence).expanduser() if raw_evidence else None
    if evidence is not None and not evidence.is_absolute():
        evidence = None
    if not isinstance(request, dict):
        return _error_result({}, "driver request must be a mapping", None)
    binary, why = find_binary()
    if binary is None:
        return _error_result(request, why, evidence)
    timeout_s, why = _timeout_s()
    if why:
        return _error_result(request, why, evidence)
    try:
        payload = json.dumps(request, default=str)
    except (TypeError, ValueError) as exc:
        return _error_result(request, f"driver request is not JSON-serialisable: {exc}", evidence)

    command = _command_name(request)
    label = f"hyops_pve_{command}"
    redact = _redactor()
    verbose = _verbose()
    # Evidence files not written (one warning line each); appended to from the pump
    # threads too, under ``log_lock``.
    lost: list[str] = []
    log_lock = threading.Lock()
    log_f: _AppendLog | None = None
    err_f: _AtomicFile | None = None
    if evidence is not None:
        # hyops-pve.log is live (whole lines, earlier calls' lines kept); the stderr copy is
        # renamed into place when the call ends.
        log_f = _AppendLog(evidence / "hyops-pve.log", lost)
        err_f = _AtomicFile(evidence / f"{label}.stderr.txt", lost)
    argv = [binary, "driver"]
    if log_f is not None:
        log_f.write(f"\n[hyops] {label} start argv={argv!r}\n")

    def finish_streams() -> None:
        for f in (log_f, err_f):
            if f is not None:
                f.commit()

    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
    except OSError as exc:
        finish_streams()
        return _error_result(
            request,
            f"cannot start hyops-pve ({BIN_ENV}={binary}): {exc}; {_FIX}",
            evidence,
            lost,
        )

    out_chunks: list[str] = []
    last_err: list[str] = []

    def feed() -> None:
        try:
            assert proc.stdin is not None
            proc.stdin.write(payload)
            proc.stdin.close()
        except (OSError, ValueError):
            pass  # the binary exited early; its stderr and exit code say why

    def pump_out() -> None:
        assert proc.stdout is not None
        for chunk in proc.stdout:
            out_chunks.append(chunk)

    relay = {"ok": verbose}

    def pump_err() -> None:
        """Drains the binary's stderr to the end whatever happens to the copies: an
        evidence file that fails stops only that copy (:class:`_AtomicFile`), a failing
        hyops stderr stops only the relay, so the binary never blocks on a full pipe."""
        assert proc.stderr is not None
        for line in proc.stderr:
            try:
                token = redact(line)
            except Exception:
                token = line
            if token.strip():
                last_err[:] = [token.strip()]
            with log_lock:
                for f in (log_f, err_f):
                    if f is not None:
                        f.write(token)
                if relay["ok"]:
                    try:
                        if sys.stderr is not None:
                            sys.stderr.write(token)
                            sys.stderr.flush()
                    except Exception:
                        relay["ok"] = False  # hyops' stderr is gone; keep draining the pipe

    def guarded(body: Callable[[], None]) -> Callable[[], None]:
        """A plug-in thread never raises into hyops: anything unexpected is one warning."""

        def target() -> None:
            try:
                body()
            except Exception as exc:
                with log_lock:
                    lost.append(_one_line(f"hyops-pve plug-in: thread {body.__name__} failed: {type(exc).__name__}: {exc}"))

        return target

    threads = [
        threading.Thread(target=guarded(t), name=f"hyops-pve-{t.__name__}", daemon=True)
        for t in (feed, pump_out, pump_err)
    ]
    for t in threads:
        t.start()

    timed_out = False
    interrupted: BaseException | None = None
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _stop(proc, _GRACE_S)
    except KeyboardInterrupt as exc:
        # The binary got the same SIGINT (same process group) and is recording the
        # cancellation; let it finish, then hand the interrupt to hyops.
        interrupted = exc
        _stop(proc, _GRACE_S)
    for t in threads:
        t.join(timeout=10)
    rc = proc.returncode
    duration_ms = int((time.monotonic() - started) * 1000)
    stdout = "".join(out_chunks)
    with log_lock:  # a pump still running after the join timeout appends no more
        if log_f is not None:
            log_f.write(f"[hyops] {label} end rc={rc}\n")
        finish_streams()
        log_f = err_f = None
    if evidence is not None:
        _write_private(evidence / f"{label}.stdout.txt", redact(stdout), lost)
        _write_private(
            evidence / f"{label}.result.json",
            json.dumps({"argv": argv, "rc": rc, "duration_ms": duration_ms}, indent=2, sort_keys=True) + "\n",
            lost,
        )
    if interrupted is not None:
        _report_lost({}, lost)
        raise interrupted

    result: Any = None
    for line in reversed(stdout.splitlines()):
        if line.strip():
            try:
                result = json.loads(line)
            except ValueError:
                result = None
            break
    log_hint = f"; see {evidence / 'hyops-pve.log'}" if evidence is not None else ""
    last = f"; last output: {last_err[0]}" if last_err else ""
    if timed_out:
        return _error_result(
            request,
            f"hyops-pve driver timed out after {timeout_s:g}s ({TIMEOUT_ENV}; {BIN_ENV}={binary}){last}{log_hint}",
            evidence,
            lost,
        )
    if not isinstance(result, dict):
        how = f"was killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with code {rc}"
        return _error_result(
            request,
            f"hyops-pve driver {how} without a result document ({BIN_ENV}={binary}; is it a hyops-pve build with the driver command?){last}{log_hint}",
            evidence,
            lost,
        )
    result.setdefault("run_id", str(request.get("run_id") or ""))
    if not isinstance(result.get("normalized_outputs"), dict):
        result["normalized_outputs"] = {}
    if not isinstance(result.get("warnings"), list):
        result["warnings"] = []
    if "status" not in result:
        result["status"] = "error"
        result["error"] = _one_line(f"hyops-pve driver result has no status ({BIN_ENV}={binary}){log_hint}")
    _report_lost(result, lost)
    return result
