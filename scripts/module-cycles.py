#!/usr/bin/env python3
"""Fails when the daemon's modules import each other in a cycle, or a folder imports one it
sits below (issue 12: modules import downward only). Reads every `crate::` path in daemon/src
outside `#[cfg(test)]` modules and comments; an inline module (`mod fuzzing { ... }`) is a module
of its own. A parent declaring a child (`mod x;`) is not an import; a child using its parent's
items is. Prints the graph with `-v`.

The folders' layers, bottom up ([`LAYERS`]): the engine (protocol and store) knows nothing of
the others; io (sockets, clock, descriptors) and the VIPs' kernel side come next; config builds
their configurations from what the operator gives; resp and ops serve clients and operators over
them; cli and the event loop compose everything. A folder imports only folders below it.

Usage: scripts/module-cycles.py [-v] [SRC_DIR]   (default: daemon/src)
"""
import os
import re
import sys


def strip_comments(src):
    # Line comments only (the daemon has no block comments); strings holding `//` are rare
    # enough that a false cut only hides an edge on that one line.
    return re.sub(r"//[^\n]*", "", src)


def block_end(src, open_brace):
    """Index just past the `}` matching the `{` at `open_brace`."""
    depth = 0
    for i in range(open_brace, len(src)):
        if src[i] == "{":
            depth += 1
        elif src[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(src)


INLINE = re.compile(r"((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([a-z]+\))?\s+)?mod\s+(\w+)\s*\{")


def split_modules(name, src, out):
    """Puts `name`'s own text in out[name], and each inline module's under name::child;
    drops `#[cfg(test)]` modules."""
    own = []
    pos = 0
    while True:
        m = INLINE.search(src, pos)
        if not m:
            own.append(src[pos:])
            break
        own.append(src[pos : m.start()])
        end = block_end(src, m.end() - 1)
        if "#[cfg(test)]" not in m.group(1):
            child = f"{name}::{m.group(2)}" if name else m.group(2)
            split_modules(child, src[m.end() : end - 1], out)
        pos = end
    out[name] = "".join(own)


def modules(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), root)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel in (["lib"], ["main"]):
                continue
            with open(os.path.join(dirpath, f)) as fh:
                split_modules("::".join(rel), strip_comments(fh.read()), out)
    return out


def edges(mods):
    names = sorted(mods, key=len, reverse=True)

    def owner(path):
        for n in names:
            if path == n or path.startswith(n + "::"):
                return n
        return None

    graph = {m: set() for m in mods}
    for m, src in mods.items():
        paths = re.findall(r"crate::((?:\w+::)*\w+)", src)
        # `use crate::{a::b, c};` and `use crate::x::{y::z, w}`: each item under its prefix.
        for prefix, group in re.findall(r"crate::((?:\w+::)*)\{([^;]*)\}", src):
            for item in re.split(r",", group):
                item = item.strip().split("::{")[0].split(" as ")[0]
                if item and item != "self":
                    paths.append(prefix + item)
        for p in paths:
            o = owner(p)
            if o and o != m:
                graph[m].add(o)
    return graph


# Each top-level module (a folder, or event_loop / testing) and the folders it may import.
LAYERS = {
    "engine": set(),
    "io": {"engine"},
    "vip": {"engine", "io"},
    "config": {"engine", "io", "vip"},
    "resp": {"engine", "io", "config"},
    "ops": {"engine", "io", "vip", "config", "resp"},
    "cli": {"engine", "io", "vip", "config", "resp", "ops"},
    "event_loop": {"engine", "io", "vip", "config", "resp", "ops"},
    "testing": {"engine", "io", "vip", "config", "resp", "ops", "event_loop"},
}


def layer_violations(graph):
    """`a -> b` edges where a's folder may not import b's; a folder missing from LAYERS is one."""
    out = []
    for m in sorted(graph):
        top = m.split("::")[0]
        if top not in LAYERS:
            out.append(f"{m}: folder `{top}` has no row in LAYERS (scripts/module-cycles.py)")
            continue
        for t in sorted(graph[m]):
            other = t.split("::")[0]
            if other != top and other not in LAYERS[top]:
                out.append(f"{m} -> {t}: `{top}` may not import `{other}`")
    return out


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main(argv):
    verbose = "-v" in argv
    args = [a for a in argv if a != "-v"]
    root = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "daemon", "src")
    graph = edges(modules(root))
    if verbose:
        for m in sorted(graph):
            print(f"{m} -> {' '.join(sorted(graph[m]))}")
    found = cycles(graph)
    for comp in found:
        inner = [f"{a} -> {b}" for a in comp for b in sorted(graph[a]) if b in comp]
        print("import cycle: " + ", ".join(inner))
    upward = layer_violations(graph)
    for v in upward:
        print("layering: " + v)
    if found or upward:
        return 1
    print(f"no import cycles among {len(graph)} daemon modules; folders import downward only")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
