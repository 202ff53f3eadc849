"""Whether a unit's `User=` can run the wrapper `install --mode exec|supervise` puts in its
ExecStart=: search (x) permission on every directory on the way to a file, symlinks followed, and
the permission on the file itself, as the kernel checks them for that user.

The usual trap: cortex-hook in a venv under /root (0700). The lease unit runs as root and works;
the wrapper runs as `User=` and every start fails with 203/EXEC. Only the mode bits are read (no
ACLs, no capabilities, no users a directory service adds later), so `install` warns, it does not
refuse. Users and groups come from NSS for `/`, from ROOT/etc/passwd and ROOT/etc/group for an
image root.
"""

import os
import stat

MAX_SYMLINKS = 40  # as the kernel's ELOOP limit
EXECUTE, READ = "execute", "read"
_BITS = {EXECUTE: (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH), READ: (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)}


class Account:
    """Who a unit's processes run as: NAME to show, UID (None: a user that owns no file) and GIDS."""

    def __init__(self, name, uid, gids):
        self.name, self.uid, self.gids = name, uid, frozenset(gids)

    def may(self, st, what):
        """True when this account has WHAT (EXECUTE or READ) permission on the file of stat ST."""
        user, group, other = _BITS[what]
        if self.uid is not None and st.st_uid == self.uid:
            return bool(st.st_mode & user)
        if st.st_gid in self.gids:
            return bool(st.st_mode & group)
        return bool(st.st_mode & other)


def account_of(files, root="/"):
    """The Account a unit (its UnitFiles FILES) runs as, or None when it runs as root or cannot be
    told here (a specifier in User= or Group=)."""
    user, group = files.service_setting("User"), files.service_setting("Group")
    dynamic = (files.service_setting("DynamicUser") or "").lower() in ("1", "yes", "true", "on")
    extra = (files.service_setting("SupplementaryGroups") or "").split()
    if not (user or dynamic) or any("%" in word for word in [user or "", group or "", *extra]):
        return None
    name, uid, gid = _user(user, root) if user else (None, None, None)
    if uid == 0:
        return None
    gids = set()
    if group or gid is not None:
        primary = _group(group, root) if group else gid
        gids.add(primary)
        if name and primary is not None:
            gids |= _memberships(name, primary, root)
    gids |= {_group(g, root) for g in extra}
    shown = f"User={user}" if user else "DynamicUser=yes"
    if user and uid is None:
        shown += " (no such user here)"
    return Account(shown, uid, gids - {None})


def denied(path, account, what, root="/"):
    """Why ACCOUNT cannot WHAT (EXECUTE or READ) the file at PATH (absolute, inside ROOT): a line
    naming the component in the way and its mode; None when it can, or when PATH cannot be
    followed here (not our place to say)."""
    pending = [part for part in path.split("/") if part]
    current, hops = "/", 0
    while pending:
        part = pending.pop(0)
        if part in (".", ".."):
            current = os.path.dirname(current) if part == ".." else current
            continue
        try:
            st = os.stat(_inside(root, current))
            if not account.may(st, EXECUTE):
                return _why(current, st, "search (x)", account)
            candidate = os.path.join(current, part)
            link = os.lstat(_inside(root, candidate))
            if not stat.S_ISLNK(link.st_mode):
                current = candidate
                continue
            hops += 1
            target = os.readlink(_inside(root, candidate))
        except OSError:
            return None
        if hops > MAX_SYMLINKS:
            return None
        current = "/" if target.startswith("/") else current
        pending = [p for p in target.split("/") if p] + pending
    try:
        st = os.stat(_inside(root, current))
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or account.may(st, what):
        return None
    return _why(current, st, "read" if what == READ else "execute (x)", account)


def _why(path, st, permission, account):
    return (f"{path} is {stat.filemode(st.st_mode)} (owner uid {st.st_uid}, group gid {st.st_gid}): "
            f"no {permission} permission for {account.name}")


def _inside(root, path):
    return os.path.join(root, path.lstrip("/"))


def _user(spec, root):
    """(name, uid, primary gid) of User=SPEC (a name or a number); (SPEC, None, None) if unknown."""
    if root == "/":
        import pwd
        try:
            entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
            return entry.pw_name, entry.pw_uid, entry.pw_gid
        except (KeyError, OverflowError):
            return (spec, int(spec), None) if spec.isdigit() else (spec, None, None)
    for fields in _table(root, "passwd"):
        if len(fields) > 3 and spec in (fields[0], fields[2]) and fields[2].isdigit() and fields[3].isdigit():
            return fields[0], int(fields[2]), int(fields[3])
    return (spec, int(spec), None) if spec.isdigit() else (spec, None, None)


def _group(spec, root):
    """The gid of Group=SPEC (a name or a number), or None if unknown."""
    if spec.isdigit():
        return int(spec)
    if root == "/":
        import grp
        try:
            return grp.getgrnam(spec).gr_gid
        except KeyError:
            return None
    for fields in _table(root, "group"):
        if len(fields) > 2 and fields[0] == spec and fields[2].isdigit():
            return int(fields[2])
    return None


def _memberships(name, gid, root):
    """The supplementary groups systemd gives user NAME (initgroups)."""
    if root == "/":
        try:
            return set(os.getgrouplist(name, gid))
        except OSError:
            return set()
    return {int(f[2]) for f in _table(root, "group")
            if len(f) > 3 and f[2].isdigit() and name in f[3].split(",")}


def _table(root, name):
    """The colon-separated lines of ROOT/etc/NAME ([] if it cannot be read)."""
    try:
        with open(_inside(root, f"/etc/{name}"), encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []
