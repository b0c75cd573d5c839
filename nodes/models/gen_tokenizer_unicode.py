# Generates tokenizer_unicode.h (letter/number classes and lower-case map for the CLIP tokenizer):
#   python3 nodes/models/gen_tokenizer_unicode.py > nodes/models/tokenizer_unicode.h
import unicodedata
def ranges(pred):
    r=[];s=None
    for c in range(0x110000):
        p=pred(c)
        if p and s is None: s=c
        if not p and s is not None: r.append((s,c-1)); s=None
    if s is not None: r.append((s,0x10ffff))
    return r
L=ranges(lambda c: unicodedata.category(chr(c)).startswith('L'))
N=ranges(lambda c: unicodedata.category(chr(c)).startswith('N'))
low=[(c,ord(chr(c).lower())) for c in range(0x110000) if len(chr(c).lower())==1 and chr(c).lower()!=chr(c)]
m=[]
for c,l in low:
    d=l-c
    if m:
        s,e,dd,st=m[-1]
        if dd==d:
            if s==e and c-e in (1,2): m[-1]=[s,c,d,c-e]; continue
            if s!=e and c-e==st: m[-1][1]=c; continue
    m.append([c,c,d,1])
o=[]
o.append("/* Unicode character classes for the CLIP tokenizer, generated from the Unicode Character Database")
o.append(" * %s (Python's unicodedata): letters = general category L*, numbers = N*, and the one-to-one" % unicodedata.unidata_version)
o.append(" * lower-case mappings of str.lower(). Included by tokenizer.c only; regenerate rather than edit. */")
def emit(name, rs):
    o.append("static const uint32_t %s[][2] = {" % name)
    line="   "
    for s,e in rs:
        item=" {0x%X, 0x%X}," % (s,e)
        if len(line)+len(item)>108: o.append(line); line="   "
        line+=item
    o.append(line); o.append("};")
emit("fr__uni_letters", L)
emit("fr__uni_numbers", N)
o.append("/* {first, last, delta, stride}: c in [first, last] with (c - first) % stride == 0 lowers to c + delta. */")
o.append("static const int32_t fr__uni_lower[][4] = {")
line="   "
for s,e,d,st in m:
    item=" {0x%X, 0x%X, %d, %d}," % (s,e,d,st)
    if len(line)+len(item)>108: o.append(line); line="   "
    line+=item
o.append(line); o.append("};")
print("\n".join(o))
