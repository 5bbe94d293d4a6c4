#!/usr/bin/env python3
"""Build the emoji data set from Debian's fonts-noto-color-emoji (no downloads).

Every bitmap in NotoColorEmoji.ttf's CBDT table (PNG images, 136x128 at 109 ppem)
is decoded, composited onto white, centre-padded to a square and resized:

  128x128 : LANCZOS from the padded square (PIL Image.resize, Resampling.LANCZOS)
  32x32   : exact 4x4 box average of the 128x128 image (PIL Image.reduce(4)),
            so  x32 == area_downsample(x128)  holds for the l32 -> l128 pair.

Each glyph is mapped to its code point sequence through the cmap and the GSUB
ligature lookups (iterated to a fixed point), and given its Unicode emoji group
from /usr/share/unicode/emoji/emoji-test.txt (Debian package unicode-data),
comparing sequences with the variation selectors U+FE0E/U+FE0F removed.
Sequences not listed there (Unicode 15.1 additions, subdivision flags, a few
font-only glyphs) take the group of their base emoji (the part before the first
ZWJ, then its first code point), else fall back to code point ranges
(see RANGE_GROUPS). Group "Component" (skin tones, hair) counts as
People & Body.

Labels (uint8):
  0 Smileys & Emotion  1 People & Body  2 Animals & Nature  3 Food & Drink
  4 Travel & Places    5 Activities     6 Objects           7 Symbols
  8 Flags              (9 = the null class used by training for CFG)

Exact duplicate bitmaps are dropped (first glyph in glyph order kept).
Held-out split: sha1(glyph name) first byte-pair mod 100 < 5  (about 5 %).

Outputs in tools/data/emoji/:
  emoji_128.npy  uint8 (N,128,128,3)     emoji_32.npy  uint8 (N,32,32,3)
  labels.npy     uint8 (N,)              heldout.npy   bool (N,)
  meta.jsonl     one line per image: index, glyph, codepoints, group, heldout
"""
import argparse
import hashlib
import io
import json
import os
import sys

import numpy as np
from PIL import Image
from fontTools.ttLib import TTFont

FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"

GROUPS = ["Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink",
          "Travel & Places", "Activities", "Objects", "Symbols", "Flags"]
NULL_CLASS = len(GROUPS)  # 9

# Fallback when a sequence is not in emoji-test.txt: first code point (after
# dropping variation selectors) by range. Coarse but documented.
RANGE_GROUPS = [
    (0x1F1E6, 0x1F1FF, 8), (0xE0020, 0xE007F, 8), (0x1F3F4, 0x1F3F4, 8), (0x1F3C1, 0x1F3C1, 8),
    (0x1F3FB, 0x1F3FF, 1), (0x1F9B0, 0x1F9B3, 1),
    (0x1F600, 0x1F64F, 0), (0x1F910, 0x1F92F, 0), (0x1F970, 0x1F97A, 0),
    (0x1F466, 0x1F487, 1), (0x1F9D0, 0x1F9DF, 1), (0x1F440, 0x1F450, 1),
    (0x1F400, 0x1F43F, 2), (0x1F330, 0x1F33F, 2), (0x1F980, 0x1F9AF, 2),
    (0x1F340, 0x1F37F, 3), (0x1F950, 0x1F96F, 3),
    (0x1F680, 0x1F6FF, 4), (0x1F300, 0x1F32F, 4),
    (0x1F380, 0x1F3CF, 5), (0x1F93A, 0x1F94F, 5),
    (0x1F4A0, 0x1F5FF, 6),
    (0x0000, 0x1FFFF, 7), (0x20000, 0x10FFFF, 7),
]

VS = {0xFE0E, 0xFE0F}


def norm(seq):
    return tuple(c for c in seq if c not in VS)


def load_emoji_test(path):
    table = {}
    if not os.path.exists(path):
        print(f"warning: {path} missing (apt-get install unicode-data); using ranges only",
              file=sys.stderr)
        return table
    group = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("# group:"):
                g = line.split(":", 1)[1].strip()
                group = 1 if g == "Component" else GROUPS.index(g)
            elif line.strip() and not line.startswith("#"):
                cps = tuple(int(h, 16) for h in line.split(";")[0].split())
                table.setdefault(norm(cps), group)
    return table


def range_group(seq):
    for c in seq:
        for lo, hi, g in RANGE_GROUPS:
            if lo <= c <= hi and g != 7:
                return g
    return 7


def glyph_sequences(font):
    """glyph name -> list of code point tuples, via cmap then GSUB ligatures.

    Iterated to a fixed point (ligature components may be ligatures). A glyph can
    be reached by several sequences (the font also holds reversed ZWJ sequences
    for right-to-left text), so all are kept; the first one found in
    emoji-test.txt decides the group.
    """
    seqs = {}
    for cp, name in sorted(font.getBestCmap().items()):
        seqs.setdefault(name, [(cp,)])
    ligs = []
    if "GSUB" in font:
        for lookup in font["GSUB"].table.LookupList.Lookup:
            for st in lookup.SubTable:
                if lookup.LookupType == 7:  # extension
                    st = st.ExtSubTable
                if getattr(st, "ligatures", None):
                    for first, lst in st.ligatures.items():
                        for lig in lst:
                            ligs.append(([first] + list(lig.Component), lig.LigGlyph))
    done = set()
    changed = True
    while changed:
        changed = False
        for i, (comps, out) in enumerate(ligs):
            if i in done or not all(c in seqs for c in comps):
                continue
            done.add(i)
            seqs.setdefault(out, []).append(tuple(cp for c in comps for cp in seqs[c][0]))
            changed = True
    return seqs


def group_of(cands, table):
    """(label, from_table) for a glyph's candidate sequences."""
    for seq in cands:
        if norm(seq) in table:
            return table[norm(seq)], True
    for seq in cands:
        if len(seq) > 1 and norm(tuple(reversed(seq))) in table:
            return table[norm(tuple(reversed(seq)))], True
    # Not RGI in Unicode 15.0 (the font has 15.1 sequences, tag flags, PUA glyphs):
    # the base emoji of a candidate (up to its first ZWJ, then its first code
    # point) decides, else the code point ranges.
    for seq in cands:
        head = seq[:seq.index(0x200D)] if 0x200D in seq else seq
        for part in (norm(head), norm(head)[:1]):
            if part and part in table and part[0] not in (0x27A1, 0x2640, 0x2642):
                return table[part], False
    return range_group(norm(cands[0])), False


def to_square_rgb(png_bytes):
    im = Image.open(io.BytesIO(png_bytes)).convert("RGBA")
    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
    im = Image.alpha_composite(bg, im).convert("RGB")
    w, h = im.size
    s = max(w, h)
    sq = Image.new("RGB", (s, s), (255, 255, 255))
    sq.paste(im, ((s - w) // 2, (s - h) // 2))
    return sq


def heldout_of(name, percent):
    h = hashlib.sha1(name.encode()).digest()
    return (h[0] * 256 + h[1]) % 100 < percent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--font", default=FONT)
    ap.add_argument("--emoji-test", default=EMOJI_TEST)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "emoji"))
    ap.add_argument("--heldout-percent", type=int, default=5)
    args = ap.parse_args()

    font = TTFont(args.font)
    strike = font["CBDT"].strikeData[0]
    order = {n: i for i, n in enumerate(font.getGlyphOrder())}
    seqs = glyph_sequences(font)
    groups_tbl = load_emoji_test(args.emoji_test)

    x128, x32, labels, held, meta = [], [], [], [], []
    seen = set()
    n_dup = n_fallback = n_noseq = 0
    sizes = {}
    for name in sorted(strike.keys(), key=lambda n: order.get(n, 1 << 30)):
        g = strike[name]
        data = g.imageData
        digest = hashlib.sha1(data).digest()
        if digest in seen:
            n_dup += 1
            continue
        seen.add(digest)
        sq = to_square_rgb(data)
        src = Image.open(io.BytesIO(data)).size
        sizes[src] = sizes.get(src, 0) + 1
        im128 = sq.resize((128, 128), Image.Resampling.LANCZOS)
        im32 = im128.reduce(4)
        cands = seqs.get(name)
        if not cands:
            n_noseq += 1
            label, seq = 7, None
        else:
            label, found = group_of(cands, groups_tbl)
            n_fallback += not found
            seq = next((c for c in cands if norm(c) in groups_tbl), cands[0])
        ho = heldout_of(name, args.heldout_percent)
        x128.append(np.asarray(im128, dtype=np.uint8))
        x32.append(np.asarray(im32, dtype=np.uint8))
        labels.append(label)
        held.append(ho)
        meta.append({"index": len(meta), "glyph": name,
                     "codepoints": " ".join(f"U+{c:04X}" for c in seq) if seq else None,
                     "group": GROUPS[label], "heldout": ho})

    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "emoji_128.npy"), np.stack(x128))
    np.save(os.path.join(args.out, "emoji_32.npy"), np.stack(x32))
    np.save(os.path.join(args.out, "labels.npy"), np.array(labels, np.uint8))
    np.save(os.path.join(args.out, "heldout.npy"), np.array(held, bool))
    with open(os.path.join(args.out, "meta.jsonl"), "w", encoding="utf-8") as f:
        for m in meta:
            f.write(json.dumps(m, ensure_ascii=False) + "\n")

    labels = np.array(labels)
    held = np.array(held)
    print(f"bitmaps in CBDT: {len(strike)}  kept: {len(meta)}  exact duplicates dropped: {n_dup}")
    print(f"source sizes: {dict((f'{w}x{h}', c) for (w, h), c in sizes.items())}")
    print(f"train: {int((~held).sum())}  held-out: {int(held.sum())}")
    print(f"no code point sequence: {n_noseq}  not in emoji-test.txt (base emoji or ranges): {n_fallback}")
    for i, gname in enumerate(GROUPS):
        print(f"  {i} {gname:18s} {int((labels == i).sum()):5d}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
