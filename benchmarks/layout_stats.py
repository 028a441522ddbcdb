"""Modules per package, the largest module and the function-level imports of the library at a git revision.

    python benchmarks/layout_stats.py REV      # e.g. HEAD, or 275692b~1 (before the layout refactor)
"""
import subprocess, sys, ast, collections
rev = sys.argv[1]
files = subprocess.run(["git","ls-tree","-r","--name-only",rev], capture_output=True, text=True).stdout.split()
py = [f for f in files if f.endswith(".py") and f.split("/")[0] in ("nnpot","potentials","training","md","data","approx","interop","explore")]
pk = collections.Counter(); sizes = {}; fl = 0
for f in py:
    src = subprocess.run(["git","show",f"{rev}:{f}"], capture_output=True, text=True).stdout
    pk["/".join(f.split("/")[:-1])] += 1
    sizes[f] = len(src.splitlines())
    t = ast.parse(src)
    seen=set()
    for node in ast.walk(t):
        if isinstance(node,(ast.FunctionDef,ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub,(ast.Import,ast.ImportFrom)) and sub.lineno not in seen:
                    seen.add(sub.lineno); fl += 1
print(dict(sorted(pk.items()))); big = max(sizes, key=sizes.get); print("largest", big, sizes[big]); print("function-level imports", fl, "modules", len(py))
