#!/usr/bin/env python3
"""Collect the wallpaper photographs and artwork of Debian's background packages.

Packages: mate-backgrounds, gnome-backgrounds, desktop-base (apt-get install them).
Every raster file they install (jpg, png, webp; SVG is skipped: no renderer is
needed that way) whose short side is at least --min-side pixels (880) and whose
name does not mark it as a logo / glow / preview is decoded, composited onto white
if it has alpha (files that are mostly transparent overlays, mean alpha < 50 %,
are skipped), downscaled (LANCZOS) so that its long side is at most --max-side
(2048), and stored as tools/data/photos/NNN_<name>.npy (uint8 HxWx3).
Near-duplicates (same picture at several resolutions, the same theme artwork
installed twice) are detected on a 16x16 thumbnail and only the largest is kept.

tools/data/photos/index.json lists each image with its package, version, source
path, sizes and the licence and copyright found for it in
/usr/share/doc/<package>/copyright. --licenses-md FILE writes that list as a
Markdown table (pasted into models/LICENSES.md). Training cuts random patches
from these arrays on the fly (tools/train.py, PhotoData).
"""
import argparse
import fnmatch
import json
import os
import re
import subprocess

import numpy as np
from PIL import Image

Image.MAX_IMAGE_PIXELS = None
PACKAGES = ["mate-backgrounds", "gnome-backgrounds", "desktop-base"]
EXTS = (".jpg", ".jpeg", ".png", ".webp")
SKIP = re.compile(r"(?<!no-)logo|glow|preview|password|debian-security|emblem", re.I)


def pkg_version(pkg):
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                          text=True, check=True).stdout.strip()


def pkg_files(pkg):
    out = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=True).stdout
    return [p for p in out.split("\n") if p.lower().endswith(EXTS) and os.path.isfile(p)]


def parse_dep5(path):
    """[(patterns, copyright, license)] from a machine-readable copyright file."""
    stanzas, cur, key = [], {}, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f.read().split("\n") + [""]:
            if not line.strip():
                if "Files" in cur:
                    stanzas.append((cur["Files"].split(), " ".join(cur.get("Copyright", "").split()),
                                    cur.get("License", "").split("\n")[0].strip()))
                cur, key = {}, None
            elif line[0] in " \t" and key:
                cur[key] += "\n" + line.strip()
            elif ":" in line:
                key, val = line.split(":", 1)
                cur[key] = val.strip()
    return stanzas


def source_path(pkg, path):
    """Installed path -> the path the package's copyright file speaks of."""
    if pkg == "mate-backgrounds":
        return os.path.relpath(path, "/usr/share/backgrounds/mate")
    if pkg == "desktop-base":
        m = re.match(r"/usr/share/plymouth/themes/([^/]+)/(.*)", path)
        if m:
            return f"{m.group(1)}-theme/plymouth/{m.group(2)}"
        m = re.match(r"/usr/share/desktop-base/(.*)", path)
        if m:
            return m.group(1)
        return os.path.basename(path)
    return os.path.basename(path)


def licence_of(pkg, path):
    cfile = f"/usr/share/doc/{pkg}/copyright"
    if pkg == "gnome-backgrounds":  # not machine-readable; see its debian/copyright
        name = os.path.basename(path)
        if name.startswith("adwaita"):
            return "CC-BY-SA-3.0", "2011 Jakub Steiner <jimmac@gmail.com>"
        return ("GPL-2+ (package licence; file not itemised in debian/copyright)",
                "GNOME backgrounds authors (Jakub Steiner and others)")
    src = source_path(pkg, path)
    best = None
    for pats, cr, lic in parse_dep5(cfile):  # last matching stanza wins (DEP-5)
        if any(fnmatch.fnmatch(src, p) for p in pats):
            best = (lic, cr)
    return best or ("unknown", "")


def thumb(im):
    return np.asarray(im.convert("RGB").resize((16, 16), Image.Resampling.BOX), np.float32) / 255.0


def to_rgb_on_white(im):
    if im.mode in ("RGBA", "LA", "P", "PA") or "transparency" in im.info:
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "photos"))
    ap.add_argument("--min-side", type=int, default=880)
    ap.add_argument("--max-side", type=int, default=2048)
    ap.add_argument("--licenses-md", help="write the per-image licence table (Markdown) here")
    args = ap.parse_args()

    cands = []
    for pkg in PACKAGES:
        ver = pkg_version(pkg)
        for p in pkg_files(pkg):
            if SKIP.search(os.path.basename(p)):
                continue
            with Image.open(p) as im:
                w, h = im.size
                if min(w, h) < args.min_side:
                    continue
                if im.mode in ("RGBA", "LA", "PA") and \
                        np.asarray(im.getchannel("A"), np.float32).mean() < 128:
                    continue  # mostly transparent overlay (meant over a colour), not a picture
                th = thumb(to_rgb_on_white(im.copy()) if im.mode != "RGB" else im)
            cands.append(dict(pkg=pkg, ver=ver, path=p, w=w, h=h, th=th))
    # near-duplicates: keep the largest
    cands.sort(key=lambda c: -c["w"] * c["h"])
    kept = []
    for c in cands:
        dup = next((k for k in kept if np.abs(k["th"] - c["th"]).mean() < 0.03), None)
        if dup is not None:
            dup.setdefault("duplicates", []).append(c["path"])
            continue
        kept.append(c)
    kept.sort(key=lambda c: c["path"])

    os.makedirs(args.out, exist_ok=True)
    for f in os.listdir(args.out):
        if f.endswith(".npy"):
            os.remove(os.path.join(args.out, f))
    entries, total = [], 0
    for i, c in enumerate(kept):
        im = to_rgb_on_white(Image.open(c["path"]))
        s = args.max_side / max(im.size)
        if s < 1:
            im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.Resampling.LANCZOS,
                           reducing_gap=3.0)
        a = np.asarray(im, np.uint8)
        src = source_path(c["pkg"], c["path"])
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(src.replace("/", "_"))[0])
        fname = f"{i:03d}_{name}.npy"
        np.save(os.path.join(args.out, fname), a)
        total += a.nbytes
        lic, cr = licence_of(c["pkg"], c["path"])
        entries.append(dict(file=fname, package=c["pkg"], version=c["ver"], source=c["path"],
                            original_size=[c["w"], c["h"]], size=[a.shape[1], a.shape[0]],
                            license=lic, copyright=cr, duplicates=c.get("duplicates", [])))
        print(f"{fname:45s} {c['w']}x{c['h']} -> {a.shape[1]}x{a.shape[0]}  {lic}")
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump(dict(min_side=args.min_side, max_side=args.max_side, images=entries), f, indent=1)
    print(f"{len(entries)} images ({len(cands) - len(entries)} near-duplicates dropped), "
          f"{total / 2**20:.0f} MiB, {sum(e['size'][0] * e['size'][1] for e in entries) / 1e6:.1f} Mpixel "
          f"-> {args.out}")
    if args.licenses_md:
        with open(args.licenses_md, "w") as f:
            f.write("| image | package (version) | licence | copyright |\n|---|---|---|---|\n")
            for e in entries:
                f.write(f"| `{e['source']}` | {e['package']} ({e['version']}) | {e['license']} | "
                        f"{e['copyright'].replace('|', '/')} |\n")
        print(f"wrote {args.licenses_md}")


if __name__ == "__main__":
    main()
