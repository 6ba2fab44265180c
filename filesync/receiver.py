"""The receiver of one target: apply the set's records in order, atomically per entry, and acknowledge.

Atomicity: visibility is **file by file**. Each file's new content is written to a temp file in the
same directory (``.<name>.arktmp-<id>``), verified against its whole-content hash, given its
attributes, and only then renamed over the old one, so no reader ever sees a half-written file.
Symlinks, devices, FIFOs and hard links are made under a temp name and renamed the same way.

Restart: the changes offset is stored only at entry boundaries (after FileEnd, EntryMeta, ...), so a
receiver killed mid-transfer re-reads that transfer from its FileBegin; temp files left over are
removed at start. Re-applying is idempotent: content already present is only acknowledged.
Divergence: before a delta is applied the local content must hash to the delta's basis; otherwise
the receiver refuses it and sends back its real content's signature, so the sender re-deltas.

Holes: hole ops are not written, and the size is set with ``ftruncate``, so a sparse source file
stays sparse however often it is rewritten; a file that already holds the right content but is
allocated where the source has holes gets them punched in place.

Delay: a delayed target applies each record no earlier than its publication + the delay in force
(filesync/delay.py). While the next record is not due the receiver holds it, pauses the partition
and applies nothing: no spool, so the delay can change at run time, even backwards.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.config import ArkConfig
from common.config_files import FileSetConfig
from filesync.attrs import apply_actions, plan_attrs, wanted_owner
from filesync.channel import CHANGES, FEEDBACK, ChannelCorrupt, Item, SetChannel
from filesync.chunks import chunk_hash, hash_file, signature_of_file
from filesync.delay import DelayFollower, wait_seconds
from filesync.delta import HOLE, LITERAL
from filesync.errors import FilesyncError, TargetFull, TargetPermission, TransferCorrupt
from filesync.meta import ROOT, FileMeta, capture, kind_of
from filesync.sparse import has_data, punch_hole

log = logging.getLogger(__name__)
TMP_MARK = ".arktmp-"
_NODE_TYPES = {"CHR": stat.S_IFCHR, "BLK": stat.S_IFBLK, "FIFO": stat.S_IFIFO}


@dataclass
class _Transfer:
    transfer_id: str
    path: str
    meta: FileMeta
    content_hash: bytes
    mode: str  # write | same | diverged | skip
    tmp: str = ""
    fd: int = -1
    basis_fd: int = -1
    seq: int = 0
    pos: int = 0
    parent_ns: tuple[int, int] | None = None
    holes: list[tuple[int, int]] = field(default_factory=list)  # (offset, length), for punching in place


class Receiver:
    """Applies one file set's changes to one target directory."""

    def __init__(self, cfg: ArkConfig, name: str, config: FileSetConfig, target: str, state_dir: Path) -> None:
        from filesync.state import StateDB

        settings, group = cfg.kafka, cfg.group
        self.config = config
        self.target = target
        self.root = config.target(target).path
        self.channel = SetChannel(settings, group, name, target, config.retention_ms)
        self.channel.ensure()
        self.delays = DelayFollower(cfg, name, config)
        self.state = StateDB(state_dir / f"target-{target}.db")
        self.reader = self.channel.reader(CHANGES, int(self.state.get("offset", "-2")))
        self.xfer: _Transfer | None = None
        self.held: Item | None = None
        #: Unix time at which the held record becomes due (inf while paused; None when none is held).
        self.due_at: float | None = None
        self.errors_in_pass = 0
        self.is_root = os.geteuid() == 0
        os.makedirs(self.root, exist_ok=True)
        self._remove_temps()
        setting = self.delays.of(target)
        if setting.holds:
            log.info("target %s of set %s: delayed %g s%s", target, name, setting.seconds,
                     " (paused)" if setting.paused else "")

    # ---- loop
    def run(self, stop: threading.Event) -> None:
        """Apply records until ``stop`` is set. Fatal target errors (full disk, refused writes) raise."""
        while not stop.is_set():
            self.step(0.1)

    def step(self, timeout: float) -> bool:
        """Apply at most one record; False when none came within ``timeout`` or the next is not due yet."""
        self.delays.refresh()
        item = self.held
        if item is None:
            try:
                item = self.reader.poll(timeout)
            except ChannelCorrupt as exc:
                self._corrupt(exc)
                return True
            if item is None:
                return False
        if not self._due(item, timeout):
            return False
        try:
            self._handle(item)
        except OSError as exc:
            self._fatal(exc)
        finally:
            self.channel.flush()
        return True

    def _due(self, item: Item, timeout: float) -> bool:
        """The delay gate: True when ``item`` may be applied now; otherwise hold it (partition paused,
        nothing spooled) and sleep a little, so delay changes and stop requests are seen promptly.

        Holding for hours without polling is safe: the reader's consumer is assign()ed, not
        subscribed, and librdkafka enforces max.poll.interval.ms only for subscriptions (since 1.4).
        """
        wait = wait_seconds(item.published_us, self.delays.of(self.target), time.time())
        if wait <= 0:
            if self.held is not None:
                self.held = self.due_at = None
                self.reader.resume()
            return True
        if self.held is None:
            self.held = item
            self.reader.pause()
        self.due_at = time.time() + wait
        time.sleep(min(wait, max(timeout, 0.01), 0.2))
        return False

    def _commit(self, item: Item) -> None:
        self.state.put("offset", str(item.offset + 1))

    def _addressed(self, targets: list[str]) -> bool:
        return not targets or self.target in targets

    def _abs(self, path: str) -> str:
        if path == ROOT:
            return self.root
        parts = path.split("/")
        if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise TransferCorrupt(f"refusing unsafe path {path!r}", fix="check the sender's version")
        return os.path.join(self.root, *parts)

    def _handle(self, item: Item) -> None:
        body, kind = item.body, item.kind
        if kind == "FileBegin":
            self._abandon()
            if self._addressed(body["targets"]):
                self._begin(body)
            else:
                meta = FileMeta.from_record(body["meta"])
                self.xfer = _Transfer(body["transfer_id"], body["path"], meta, b"", "skip")
            return
        if kind == "FileData":
            if self.xfer is not None and self.xfer.transfer_id == body["transfer_id"]:
                self._data(body)
            return
        if kind in ("FileEnd", "FileAbort"):
            if self.xfer is not None and self.xfer.transfer_id == body["transfer_id"]:
                if kind == "FileEnd":
                    self._end(body["messages"])
                else:
                    self._abandon()
            self._commit(item)
            return
        if kind == "PassEnd":
            self._abandon()
            self._check_divergence()
            point = {"started_us": body["started_us"], "redo_start": body["redo_start"],
                     "redo_end": body["redo_end"], "applied_us": time.time_ns() // 1000}
            self.channel.publish(FEEDBACK, "PassAck", {"target": self.target, "pass_id": body["pass_id"],
                                                       "errors": self.errors_in_pass, **point})
            self.state.put("last_pass", json.dumps({"pass_id": body["pass_id"], **point}))
            self.errors_in_pass = 0
        elif self._addressed(body.get("targets", [])):
            if kind == "EntryMeta":
                self._entry(body["path"], FileMeta.from_record(body["meta"]), body["content_hash"])
            elif kind == "Rename":
                meta = FileMeta.from_record(body["meta"])
                self._rename(body["from_path"], body["to_path"], meta, body["content_hash"])
            elif kind == "Delete":
                self._delete(body["path"])
        self._commit(item)

    # ---- what is here now
    def _local_hash(self, path: str, st: os.stat_result) -> bytes:
        row = self.state.applied(path)
        if row and row.kind in ("FILE", "HARDLINK") and (row.size, row.mtime_ns, row.ino) == (
                st.st_size, st.st_mtime_ns, st.st_ino):
            return row.content_hash
        return hash_file(self._abs(path))

    def _local_digest(self, path: str, st: os.stat_result) -> bytes:
        """Digest of the attributes the entry has here (compared with itself later, never with the
        source's: owners mapped by name, a non-root receiver or security labels legitimately differ)."""
        pre = self.config.preserve
        meta = capture(self._abs(path), st, xattrs=pre.xattrs, acls=pre.acls)
        return meta.digest() if meta is not None else b""

    def _lstat(self, path: str) -> os.stat_result | None:
        try:
            return os.lstat(self._abs(path))
        except FileNotFoundError:
            return None

    def _ack(self, path: str, ok: bool, meta: FileMeta | None, content_hash: bytes, reason: str = "",
             signature: bytes | None = None) -> None:
        st = self._lstat(path)
        if st is not None and ok and meta is not None:
            self.state.set_applied(path, meta.kind, content_hash, meta.digest(), st, self._local_digest(path, st))
        elif st is None:
            self.state.set_applied(path, "", b"", b"", None)
        if not ok:
            self.errors_in_pass += 1
        kind = (meta.kind if ok and meta is not None else kind_of(st) or "") if st is not None else ""
        self.channel.publish(FEEDBACK, "Ack", {
            "target": self.target, "path": path, "ok": ok, "present": st is not None, "entry_kind": kind,
            "content_hash": content_hash if st is not None else b"",
            "meta_digest": meta.digest() if ok and meta is not None and st is not None else b"",
            "reason": reason, "signature": signature})

    def _refuse(self, path: str, reason: str, *, with_signature: bool = False) -> None:
        st = self._lstat(path)
        digest, sig = b"", None
        if st is not None and stat.S_ISREG(st.st_mode):
            if with_signature:
                signature, _ = signature_of_file(self._abs(path), self.config.chunk_avg_bytes, keep_limit=0)
                digest, sig = signature.content_hash, signature.pack()
            else:
                digest = hash_file(self._abs(path))
        log.warning("target %s: refusing %s: %s", self.target, path, reason)
        self._ack(path, False, None, digest, reason, sig)

    # ---- transfers
    def _begin(self, body: dict[str, object]) -> None:
        path = str(body["path"])
        meta = FileMeta.from_record(body["meta"])  # type: ignore[arg-type]
        content_hash, basis = body["content_hash"], body["basis_hash"]
        assert isinstance(content_hash, bytes)
        abs_path = self._abs(path)
        st = self._lstat(path)
        here = self._local_hash(path, st) if st is not None and stat.S_ISREG(st.st_mode) else None
        x = _Transfer(str(body["transfer_id"]), path, meta, content_hash, "write")
        if here == content_hash:
            x.mode = "same"
        elif basis is not None and here != basis:
            x.mode = "diverged"
        else:
            os.makedirs(os.path.dirname(abs_path), exist_ok=True)
            x.parent_ns = _times(os.path.dirname(abs_path))
            name = f".{os.path.basename(abs_path)}{TMP_MARK}{x.transfer_id[:12]}"
            x.tmp = os.path.join(os.path.dirname(abs_path), name)
            x.fd = os.open(x.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            if basis is not None:
                x.basis_fd = os.open(abs_path, os.O_RDONLY)
        self.xfer = x

    def _data(self, body: dict[str, object]) -> None:
        x = self.xfer
        assert x is not None
        if x.mode == "same":  # the content is here already; only its holes may be missing
            for op in body["ops"]:  # type: ignore[attr-defined]
                if op["copy_offset"] == HOLE:
                    x.holes.append((x.pos, op["length"]))
                x.pos += op["length"]
            return
        if x.mode != "write":
            return
        if body["seq"] != x.seq:
            self._fail_transfer(f"FileData {body['seq']} arrived, {x.seq} expected")
            return
        x.seq += 1
        for op in body["ops"]:  # type: ignore[attr-defined]
            offset = op["copy_offset"]
            if offset == LITERAL:
                data = op["data"]
                if len(data) != op["length"] or chunk_hash(data) != op["chunk_hash"]:
                    self._fail_transfer(f"chunk at {x.pos} failed its hash")
                    return
                written = 0
                while written < len(data):
                    written += os.pwrite(x.fd, memoryview(data)[written:], x.pos + written)
            elif offset == HOLE:
                pass  # nothing written: the new file has a hole there (its size is set at the end)
            elif offset >= 0:
                self._copy(x, offset, op["length"])
            else:
                self._fail_transfer(f"unknown op {offset} at {x.pos} (is the sender newer than this receiver?)")
                return
            x.pos += op["length"]

    @staticmethod
    def _copy(x: _Transfer, offset: int, length: int) -> None:
        dst = x.pos
        while length > 0:
            n = os.copy_file_range(x.basis_fd, x.fd, length, offset, dst)
            if n <= 0:
                raise OSError(errno.EIO, f"basis shorter than the delta expects at {offset}")
            offset += n
            dst += n
            length -= n

    def _fail_transfer(self, reason: str) -> None:
        x = self.xfer
        assert x is not None
        self._abandon()
        self._refuse(x.path, f"corrupt: {reason}", with_signature=True)
        self.xfer = _Transfer(x.transfer_id, x.path, x.meta, b"", "skip")

    def _end(self, messages: int) -> None:
        x = self.xfer
        assert x is not None
        if x.mode == "skip":
            self.xfer = None
            return
        if x.mode == "same":
            self.xfer = None
            self._punch_in_place(x)
            self._attrs_in_place(x.path, x.meta)
            self._ack(x.path, True, x.meta, x.content_hash)
            return
        if x.mode == "diverged":
            self.xfer = None
            self._refuse(x.path, "diverged: target content is not the delta's basis", with_signature=True)
            return
        if messages != x.seq:
            self._fail_transfer(f"{x.seq} of {messages} data records arrived")
            return
        os.ftruncate(x.fd, x.pos)  # the size, with any trailing hole
        if self.config.fsync:
            os.fsync(x.fd)
        os.close(x.fd)
        x.fd = -1
        if hash_file(x.tmp) != x.content_hash:
            self._fail_transfer("whole-file hash mismatch after apply")
            return
        abs_path = self._abs(x.path)
        self._set_attrs(x.tmp, x.meta, capture(x.tmp, os.lstat(x.tmp)))  # inherited default ACLs count
        self._replace(x.tmp, abs_path, x.parent_ns)
        self._abandon()
        self._ack(x.path, True, x.meta, x.content_hash)

    def _abandon(self) -> None:
        x, self.xfer = self.xfer, None
        if x is None:
            return
        for fd in (x.fd, x.basis_fd):
            if fd >= 0:
                os.close(fd)
        x.fd = x.basis_fd = -1
        if x.tmp and os.path.lexists(x.tmp):
            os.unlink(x.tmp)
            if x.parent_ns is not None:  # the directory's mtime is replicated: undo the temp file's trace
                os.utime(os.path.dirname(x.tmp), ns=x.parent_ns)

    def _punch_in_place(self, x: _Transfer) -> None:
        """Punch the source's holes into a file that has the right content but allocates them.

        The bytes there are zeros already (the content hash matched), so readers see no change.
        Best effort: allocation is a property verify only warns about.
        """
        if not x.holes:
            return
        abs_path = self._abs(x.path)
        try:
            fd = os.open(abs_path, os.O_WRONLY | os.O_NOFOLLOW)
        except OSError as exc:
            log.info("target %s: %s keeps its allocation (%s)", self.target, x.path, exc.strerror)
            return
        try:
            for offset, length in x.holes:
                if has_data(fd, offset, offset + length):
                    punch_hole(fd, offset, length)
        except OSError as exc:
            log.info("target %s: cannot punch holes into %s (%s)", self.target, x.path, exc.strerror)
        finally:
            os.close(fd)

    # ---- entries without content
    def _set_attrs(self, path: str, meta: FileMeta, current: FileMeta | None) -> None:
        owner = wanted_owner(meta, self.config.preserve)
        apply_actions(path, plan_attrs(meta, self.config.preserve, current, owner, is_root=self.is_root))

    def _attrs_in_place(self, path: str, meta: FileMeta) -> None:
        abs_path = self._abs(path)
        st = os.lstat(abs_path)
        self._set_attrs(abs_path, meta, capture(abs_path, st))

    @staticmethod
    def _replace(tmp: str, dest: str, parent_ns: tuple[int, int] | None) -> None:
        """Rename ``tmp`` over ``dest`` (a directory in the way is removed), then give the parent
        directory back the times it had before the temp file was made."""
        try:
            dst = os.lstat(dest)
        except FileNotFoundError:
            dst = None
        if dst is not None and stat.S_ISDIR(dst.st_mode):
            shutil.rmtree(dest)
        if dst is not None and os.path.samestat(dst, os.lstat(tmp)):
            os.unlink(tmp)  # already a link to that inode: rename() would do nothing and leave tmp behind
        else:
            os.rename(tmp, dest)
        if parent_ns is not None:
            os.utime(os.path.dirname(dest), ns=parent_ns)

    def _entry(self, path: str, meta: FileMeta, content_hash: bytes) -> None:
        abs_path = self._abs(path)
        st = self._lstat(path)
        if meta.kind == "DIR":
            if path == ROOT:
                os.makedirs(abs_path, exist_ok=True)
            elif st is not None and not stat.S_ISDIR(st.st_mode):
                os.unlink(abs_path)
                st = None
            if st is None and path != ROOT:
                parent_ns = _times(os.path.dirname(abs_path))
                os.makedirs(abs_path, mode=0o700, exist_ok=True)
                os.utime(os.path.dirname(abs_path), ns=parent_ns)
            self._set_attrs(abs_path, meta, capture(abs_path, os.lstat(abs_path)))
        elif meta.kind == "FILE":
            if st is None or not stat.S_ISREG(st.st_mode) or self._local_hash(path, st) != content_hash:
                self._refuse(path, "missing: attributes sent for content the target lacks")
                return
            self._attrs_in_place(path, meta)
        else:
            parent_ns = _times(os.path.dirname(abs_path))
            tmp = os.path.join(os.path.dirname(abs_path), f".{os.path.basename(abs_path)}{TMP_MARK}entry")
            if os.path.lexists(tmp):
                os.unlink(tmp)
            if meta.kind == "SYMLINK":
                os.symlink(meta.link, tmp)
            elif meta.kind == "HARDLINK":
                os.link(self._abs(meta.link), tmp)
            else:
                os.mknod(tmp, meta.mode | _NODE_TYPES[meta.kind], meta.rdev)
            if meta.kind != "HARDLINK":
                self._set_attrs(tmp, meta, capture(tmp, os.lstat(tmp)))
            self._replace(tmp, abs_path, parent_ns)
        self._ack(path, True, meta, content_hash)

    def _rename(self, src: str, dst: str, meta: FileMeta, content_hash: bytes) -> None:
        st = self._lstat(src)
        if st is None or not stat.S_ISREG(st.st_mode) or self._local_hash(src, st) != content_hash:
            self._refuse(dst, f"missing: rename source {src} is not the expected content")
            if st is None:
                self._ack(src, True, None, b"")
            else:
                self._refuse(src, "diverged: rename source changed on the target")
            return
        abs_dst = self._abs(dst)
        os.makedirs(os.path.dirname(abs_dst), exist_ok=True)
        src_parent = _times(os.path.dirname(self._abs(src)))
        self._replace(self._abs(src), abs_dst, _times(os.path.dirname(abs_dst)))
        os.utime(os.path.dirname(self._abs(src)), ns=src_parent)
        self._attrs_in_place(dst, meta)
        self.state.set_applied(src, "", b"", b"", None)
        self._ack(dst, True, meta, content_hash)
        self._ack(src, True, None, b"")

    def _delete(self, path: str) -> None:
        if path == ROOT:
            self._refuse(path, "refusing to delete the root of the set")
            return
        abs_path = self._abs(path)
        st = self._lstat(path)
        if st is not None:
            parent = _times(os.path.dirname(abs_path))
            if stat.S_ISDIR(st.st_mode):
                try:
                    os.rmdir(abs_path)
                except OSError as exc:
                    if exc.errno != errno.ENOTEMPTY:
                        raise
                    self._refuse(path, "directory not empty: it holds entries the set does not manage")
                    return
            else:
                os.unlink(abs_path)
            os.utime(os.path.dirname(abs_path), ns=parent)
        self._ack(path, True, None, b"")

    # ---- integrity
    def _check_divergence(self) -> None:
        """Refuse (so the next pass repairs) every applied entry changed on the target since.

        Content: deleted, or size/mtime/inode moved and the hash differs. Attributes (mode, owner,
        times, xattrs, ACLs; the root too): the ctime moved and the entry's own attribute digest is
        not the one it had after it was applied. The receiver's own steps also move ctimes (a
        directory's times restored after a change inside it, a hard link's count), without changing
        the digest: those rows are only refreshed.
        """
        for row in self.state.applied_paths():
            if not row.kind:
                continue
            st = self._lstat(row.path)
            if st is None:
                self._refuse(row.path, "diverged: deleted on the target")
                continue
            content = row.kind in ("FILE", "HARDLINK", "SYMLINK")
            if content and (st.st_size, st.st_mtime_ns, st.st_ino) != (row.size, row.mtime_ns, row.ino):
                if row.kind == "SYMLINK" or self._local_hash(row.path, st) != row.content_hash:
                    self._refuse(row.path, "diverged: changed on the target", with_signature=row.kind != "SYMLINK")
                    continue
            elif st.st_ctime_ns == row.ctime_ns:
                continue
            digest = self._local_digest(row.path, st)
            if row.local_digest and digest != row.local_digest:
                self._refuse(row.path, "diverged: attributes changed on the target")
            else:
                self.state.touch_applied(row.path, st, digest)

    def _corrupt(self, exc: ChannelCorrupt) -> None:
        path = self.xfer.path if self.xfer is not None else ""
        if self.xfer is not None:
            self._fail_transfer(f"record at offset {exc.offset} failed its CRC-32C")
        else:
            self._ack(path, False, None, b"", f"corrupt: record at offset {exc.offset} failed its CRC-32C")
        self.channel.flush()

    def _fatal(self, exc: OSError) -> None:
        path = self.xfer.path if self.xfer is not None else ""
        self._abandon()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            err: FilesyncError = TargetFull(
                f"target {self.target}: no space left on the filesystem of {self.root} "
                f"while writing {path or 'an entry'}"
                " (the previous version is intact)",
                fix=f"free space or grow the filesystem holding {self.root}, then restart the receiver: it resumes")
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            err = TargetPermission(
                f"target {self.target}: the system refused writing {path or 'an entry'} "
                f"under {self.root}: {exc.strerror}",
                fix="make the target writable (mount rw, chattr -i, run the receiver as root), then restart it")
        else:
            raise exc
        self.channel.publish(FEEDBACK, "Ack", {
            "target": self.target, "path": "", "ok": False, "present": False, "entry_kind": "",
            "content_hash": b"", "meta_digest": b"", "reason": f"fatal: {err.message}\nfix: {err.fix}",
            "signature": None})
        self.channel.flush()
        raise err

    def _remove_temps(self) -> None:
        for dirpath, _dirs, files in os.walk(self.root):
            temps = [name for name in files if TMP_MARK in name]
            if temps:
                times = _times(dirpath)  # a directory's mtime is replicated: removing our temps keeps it
                for name in temps:
                    os.unlink(os.path.join(dirpath, name))
                os.utime(dirpath, ns=times)

    def close(self) -> None:
        """Drop any staged transfer and release the clients."""
        self._abandon()
        self.channel.close()
        self.reader.close()
        self.delays.close()
        self.state.close()


def _times(path: str) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_atime_ns, st.st_mtime_ns
