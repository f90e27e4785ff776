#!/usr/bin/env python3
"""No import circle between the modules of a crate: every helper lives below its users.

    python3 scripts/check-modules.py [--graph] [CRATE_SRC ...]   (default: core/src functions/src)

A module is a file (`lib.rs` is the crate, `a/mod.rs` is `a`, `a/b.rs` is `a::b`). Module M
depends on module N when M's code (not its comments, not its `#[cfg(test)]` modules) names a
path into N: `crate::n::…`, `super::…`, `self::…`, or a child module declared in M (`mod n;`
then `n::…`). A path is resolved to the deepest module it names. A `pub use` / `pub(crate) use`
is a re-export (the module's public surface), not a dependency, and a module naming itself or
one of its descendants through a re-export path is fine; everything else is an edge. The check
fails (exit 1) on every strongly connected set of more than one module, except the pairs
listed in ALLOWED (the route table and its OpenAPI document describe each other).

Written for this workspace (2 crates, plain `use` paths); it is not a Rust parser: a path in a
string literal or a macro body is read like code.
"""

import os
import re
import sys

ALLOWED = [
    # functions: the route table lists each route's OpenAPI operation; the OpenAPI document is
    # built from the route table.
    {"crate::routes", "crate::openapi"},
]

IDENT = r"[a-z_][a-z0-9_]*"


def module_of(root, path):
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    if rel == ["lib"]:
        return ("crate",)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return ("crate", *rel)


def strip(text):
    # Test modules: `#[cfg(test)]` then `mod name {` … its closing brace.
    out, i = [], 0
    pat = re.compile(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+\w+\s*\{")
    while True:
        m = pat.search(text, i)
        if not m:
            out.append(text[i:])
            break
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while depth and j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    text = "".join(out)
    text = re.sub(r"//[^\n]*", "", text)  # comments, doc comments included
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return text


def uses(text):
    """Yields (path as a list of segments, is_reexport) for every path in the code."""
    # `use a::{b, c::{d, e}};` → a::b, a::c::d, a::c::e
    for m in re.finditer(r"\b(pub(\([a-z]+\))?\s+)?use\s+([^;]+);", text):
        reexport = bool(m.group(1))
        for p in expand(m.group(3).replace(" ", "").replace("\n", "")):
            yield p.split("::"), reexport
    body = re.sub(r"\b(pub(\([a-z]+\))?\s+)?use\s+[^;]+;", "", text)
    for m in re.finditer(r"(?<![\w:.])((?:%s::)+)(?!<)" % IDENT, body):
        yield m.group(1).rstrip(":").split("::"), False


def expand(tree):
    if "{" not in tree:
        return [re.sub(r"\bas\w+$", "", tree.split(" as ")[0])]
    head, rest = tree.split("{", 1)
    inner = rest[: rest.rindex("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    parts.append(cur)
    out = []
    for p in filter(None, parts):
        for e in expand(p):
            out.append(head + e if e != "self" else head.rstrip(":"))
    return out


def check(root):
    files = []
    for d, _, names in os.walk(root):
        if os.path.relpath(d, root).split(os.sep)[0] == "bin":
            continue  # each binary is a crate of its own
        files += [os.path.join(d, n) for n in names if n.endswith(".rs")]
    mods = {module_of(root, f): f for f in files}
    children = {m: {c[-1] for c in mods if len(c) == len(m) + 1 and c[: len(m)] == m} for m in mods}
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        text = strip(open(f, encoding="utf-8").read())
        for segs, reexport in uses(text):
            if segs[0] == "crate":
                base, rest = ("crate",), segs[1:]
            elif segs[0] == "super":
                base, rest = m, segs
                while rest and rest[0] == "super":
                    base, rest = base[:-1], rest[1:]
            elif segs[0] == "self":
                base, rest = m, segs[1:]
            elif segs[0] in children[m]:
                base, rest = m, segs
            else:
                continue  # an external crate, a local variable's field, a type's item
            target = base
            for s in rest:
                if target + (s,) in mods:
                    target = target + (s,)
                else:
                    break
            if target == m or target not in mods:
                continue
            if reexport and target[: len(m)] == m:
                continue  # re-exporting a descendant's item
            edges[m].add(target)
    return mods, edges


def sccs(nodes, edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main(argv):
    graph = "--graph" in argv
    roots = [a for a in argv if not a.startswith("--")] or ["core/src", "functions/src"]
    failed = False
    for root in roots:
        mods, edges = check(root)
        name = lambda m: "::".join(m)
        if graph:
            for m in sorted(mods):
                print(f"{root}: {name(m)} -> {', '.join(sorted(map(name, edges[m]))) or '-'}")
        bad = []
        for comp in sccs(list(mods), edges):
            names = {name(m) for m in comp}
            if len(comp) > 1 and names not in ALLOWED:
                bad.append(sorted(names))
        n_edges = sum(map(len, edges.values()))
        if bad:
            failed = True
            for comp in bad:
                print(f"{root}: import circle between {', '.join(comp)}:")
                for m in sorted(mods, key=name):
                    if name(m) in comp:
                        inside = sorted(name(t) for t in edges[m] if name(t) in comp)
                        print(f"    {name(m)} -> {', '.join(inside)}")
        else:
            print(f"{root}: {len(mods)} modules, {n_edges} dependencies, no import circle")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
