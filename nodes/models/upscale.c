/* Upscale models: RRDBNet and SRVGGNetCompact over the ops API, and ComfyUI's tiled_scale around them (see
 * nodes/models/upscale.h). */
#include "nodes/models/upscale.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/safetensors.h"

#define FR__MAX_BLOCKS 256
#define FR__MAX_UPS 3

struct fr__conv {
  struct fr_tensor *w, *b; /* [O, I, 3, 3] (or 1x1), [O] */
};

struct fr_upscaler {
  enum fr_upscaler_arch arch;
  int scale, in_nc, out_nc, nf;
  /* RRDBNet */
  int nb, gc, unshuffle, n_up;
  struct fr__conv first, trunk, up[FR__MAX_UPS], hr, last;
  struct fr__conv *rdb; /* [nb][3][5] */
  /* SRVGGNetCompact: num_conv + 2 convs, num_conv + 1 PReLU slopes [1, nf, 1, 1] */
  int num_conv;
  struct fr__conv *convs;
  struct fr_tensor **prelu;
  char desc[96];
};

static void fr__conv_free(struct fr__conv *c) {
  fr_tensor_free(c->w);
  fr_tensor_free(c->b);
}

void fr_upscaler_free(struct fr_upscaler *m) {
  if (!m)
    return;
  fr__conv_free(&m->first);
  fr__conv_free(&m->trunk);
  for (int i = 0; i < FR__MAX_UPS; i++)
    fr__conv_free(&m->up[i]);
  fr__conv_free(&m->hr);
  fr__conv_free(&m->last);
  if (m->rdb)
    for (int i = 0; i < m->nb * 15; i++)
      fr__conv_free(&m->rdb[i]);
  fr_free(m->rdb);
  if (m->convs)
    for (int i = 0; i < m->num_conv + 2; i++)
      fr__conv_free(&m->convs[i]);
  fr_free(m->convs);
  if (m->prelu)
    for (int i = 0; i < m->num_conv + 1; i++)
      fr_tensor_free(m->prelu[i]);
  fr_free(m->prelu);
  fr_free(m);
}

enum fr_upscaler_arch fr_upscaler_arch(const struct fr_upscaler *m) {
  return m->arch;
}
int fr_upscaler_scale(const struct fr_upscaler *m) {
  return m->scale;
}
int fr_upscaler_channels(const struct fr_upscaler *m) {
  return m->in_nc;
}
const char *fr_upscaler_describe(const struct fr_upscaler *m) {
  return m->desc;
}

/* ---- loading ---- */

struct fr__ld {
  struct fr_ctx *c;
  const struct fr_safetensors *st;
  const char *path, *prefix;
  struct fr_err *err;
  enum fr_status rc;
};

static const struct fr_st_entry *fr__find(struct fr__ld *L, const char *name) {
  char full[256];
  snprintf(full, sizeof full, "%s%s", L->prefix, name);
  return fr_st_find(L->st, full);
}

/* The tensor name (prefix added), checked against want (ndim dims; -1 = any); NULL after recording the
 * first error in L. */
static struct fr_tensor *fr__get(struct fr__ld *L, const char *name, int ndim, const int64_t *want) {
  if (L->rc)
    return NULL;
  const struct fr_st_entry *e = fr__find(L, name);
  if (!e) {
    L->rc = fr_errf(L->err, FR_E_FORMAT, "%s: tensor %s%s is missing", L->path, L->prefix, name);
    return NULL;
  }
  bool ok = e->ndim == ndim && (e->dtype == FR_F32 || e->dtype == FR_F16 || e->dtype == FR_BF16);
  for (int i = 0; ok && i < ndim; i++)
    ok = want[i] < 0 || e->shape[i] == want[i];
  if (!ok) {
    char a[96], b[96];
    L->rc = fr_errf(L->err, FR_E_FORMAT, "%s: tensor %s%s: expected a float tensor %s, file has %s %s",
                    L->path, L->prefix, name, fr_shape_str_dims(ndim, want, a, sizeof a),
                    fr_dtype_name(e->dtype), fr_shape_str_dims(e->ndim, e->shape, b, sizeof b));
    return NULL;
  }
  struct fr_tensor *v = fr_st_view(e), *w = v ? fr_ctx_weight(L->c, v) : NULL;
  fr_tensor_free(v);
  if (!w)
    L->rc = fr_ctx_failed(L->c) ? fr_ctx_status(L->c, L->err)
                                : fr_errf(L->err, FR_E_NOMEM, "%s: tensor %s: out of memory", L->path, name);
  return w;
}

/* A conv's weight (O x I x k x k; -1 = any) and bias under base + ".weight" / ".bias". */
static void fr__get_conv(struct fr__ld *L, struct fr__conv *cv, const char *base, int64_t o, int64_t i,
                         int k) {
  char n[256];
  if ((size_t)snprintf(n, sizeof n, "%s.weight", base) >= sizeof n) { /* never for the architectures' names */
    L->rc = fr_errf(L->err, FR_E_FORMAT, "%s: tensor name %s.weight is too long", L->path, base);
    return;
  }
  cv->w = fr__get(L, n, 4, (int64_t[]){o, i, k, k});
  if (!cv->w)
    return;
  snprintf(n, sizeof n, "%s.bias", base); /* shorter than ".weight" */
  cv->b = fr__get(L, n, 1, (int64_t[]){cv->w->shape[0]});
}

static int64_t fr__dim(struct fr__ld *L, const char *name, int d) {
  const struct fr_st_entry *e = fr__find(L, name);
  return e && d < e->ndim ? e->shape[d] : -1;
}

static enum fr_status fr__load_rrdb(struct fr__ld *L, struct fr_upscaler *m, bool old) {
  m->arch = FR_UPSCALER_RRDB;
  const char *first = old ? "model.0" : "conv_first";
  char n[160];
  snprintf(n, sizeof n, "%s.weight", first);
  int64_t nf = fr__dim(L, n, 0), in_ch = fr__dim(L, n, 1);
  /* blocks */
  int nb = 0;
  for (; nb < FR__MAX_BLOCKS; nb++) {
    snprintf(n, sizeof n, old ? "model.1.sub.%d.RDB1.conv1.0.weight" : "body.%d.rdb1.conv1.weight", nb);
    if (!fr__find(L, n))
      break;
  }
  if (nb == 0 || nf < 1)
    return fr_errf(L->err, FR_E_FORMAT, "%s: an RRDBNet (ESRGAN) without residual blocks (no %s)", L->path,
                   n);
  snprintf(n, sizeof n, old ? "model.1.sub.0.RDB1.conv1.0.weight" : "body.0.rdb1.conv1.weight");
  int64_t gc = fr__dim(L, n, 0);
  /* the up-convolutions, the HR conv and the last conv */
  const char *up_names[FR__MAX_UPS + 2];
  char old_names[16][32];
  int n_convs = 0;
  if (old) {
    for (int idx = 2; idx < 16 && n_convs < FR__MAX_UPS + 2; idx++) {
      snprintf(old_names[idx], sizeof old_names[idx], "model.%d", idx);
      snprintf(n, sizeof n, "model.%d.weight", idx);
      if (fr__find(L, n))
        up_names[n_convs++] = old_names[idx];
    }
    if (n_convs < 2)
      return fr_errf(L->err, FR_E_FORMAT, "%s: an old-layout ESRGAN without its HR and last convs (model.N)",
                     L->path);
  } else {
    static const char *const ups[] = {"conv_up1", "conv_up2", "conv_up3"};
    for (int i = 0; i < FR__MAX_UPS; i++) {
      snprintf(n, sizeof n, "%s.weight", ups[i]);
      if (fr__find(L, n))
        up_names[n_convs++] = ups[i];
    }
    up_names[n_convs++] = "conv_hr";
    up_names[n_convs++] = "conv_last";
  }
  m->n_up = n_convs - 2;
  snprintf(n, sizeof n, "%s.weight", up_names[n_convs - 1]);
  int64_t out_nc = fr__dim(L, n, 0);
  /* Real-ESRGAN x2 / x1 fold the input with pixel_unshuffle: conv_first takes out_nc x 4 (16) channels */
  int r = out_nc > 0 && in_ch == out_nc * 4 ? 2 : (out_nc > 0 && in_ch == out_nc * 16 ? 4 : 1);
  if (out_nc < 1 || (r == 1 && in_ch != out_nc))
    return fr_errf(L->err, FR_E_FORMAT,
                   "%s: tensor %s%s.weight has %lld input channels for %lld output channels: not an ESRGAN "
                   "layout flowrun knows (equal, or 4x / 16x for pixel-unshuffle models)",
                   L->path, L->prefix, first, (long long)in_ch, (long long)out_nc);
  int up = 1 << m->n_up;
  if (up % r != 0)
    return fr_errf(L->err, FR_E_FORMAT, "%s: %d up-convolutions with a pixel-unshuffle of %d", L->path,
                   m->n_up, r);
  m->unshuffle = r;
  m->scale = up / r;
  m->nb = nb;
  m->nf = (int)nf;
  m->gc = (int)gc;
  m->in_nc = m->out_nc = (int)out_nc;
  m->rdb = fr_calloc((size_t)nb * 15, sizeof *m->rdb);
  if (!m->rdb)
    return fr_errf(L->err, FR_E_NOMEM, "%s: out of memory", L->path);
  fr__get_conv(L, &m->first, first, nf, in_ch, 3);
  for (int b = 0; b < nb && !L->rc; b++)
    for (int k = 0; k < 3; k++)
      for (int j = 0; j < 5; j++) {
        char base[128];
        if (old)
          snprintf(base, sizeof base, "model.1.sub.%d.RDB%d.conv%d.0", b, k + 1, j + 1);
        else
          snprintf(base, sizeof base, "body.%d.rdb%d.conv%d", b, k + 1, j + 1);
        fr__get_conv(L, &m->rdb[(b * 3 + k) * 5 + j], base, j == 4 ? nf : gc, nf + j * gc, 3);
      }
  if (old)
    snprintf(n, sizeof n, "model.1.sub.%d", nb);
  else
    snprintf(n, sizeof n, "conv_body");
  fr__get_conv(L, &m->trunk, n, nf, nf, 3);
  for (int i = 0; i < m->n_up; i++)
    fr__get_conv(L, &m->up[i], up_names[i], nf, nf, 3);
  fr__get_conv(L, &m->hr, up_names[n_convs - 2], nf, nf, 3);
  fr__get_conv(L, &m->last, up_names[n_convs - 1], out_nc, nf, 3);
  snprintf(m->desc, sizeof m->desc, "RRDBNet x%d, %d block%s, %d features%s", m->scale, nb,
           nb == 1 ? "" : "s", m->nf, old ? " (old ESRGAN layout)" : "");
  return L->rc;
}

static enum fr_status fr__load_srvgg(struct fr__ld *L, struct fr_upscaler *m) {
  m->arch = FR_UPSCALER_SRVGG;
  int64_t nf = fr__dim(L, "body.0.weight", 0), in_nc = fr__dim(L, "body.0.weight", 1);
  /* body: conv, prelu, (conv, prelu) x num_conv, conv: the highest index is the last conv */
  int last = 0;
  char n[64];
  for (int i = 2; i < 4096; i += 2) {
    snprintf(n, sizeof n, "body.%d.weight", i);
    if (!fr__find(L, n))
      break;
    last = i;
  }
  if (nf < 1 || in_nc < 1 || last < 2)
    return fr_errf(L->err, FR_E_FORMAT, "%s: an SRVGGNetCompact without its body convolutions", L->path);
  if (!fr__find(L, "body.1.weight"))
    return fr_errf(
        L->err, FR_E_FORMAT,
        "%s: tensor %sbody.1.weight is missing: only the PReLU variant of SRVGGNetCompact is supported",
        L->path, L->prefix);
  m->num_conv = last / 2 - 1;
  snprintf(n, sizeof n, "body.%d.weight", last);
  int64_t out_ch = fr__dim(L, n, 0);
  int s = 1;
  while (s < 8 && in_nc * s * s < out_ch)
    s++;
  if (in_nc * s * s != out_ch || (s != 1 && s != 2 && s != 4 && s != 8))
    return fr_errf(L->err, FR_E_FORMAT,
                   "%s: tensor %s%s has %lld output channels: not %lld x scale^2 for a scale of 1, 2, 4 or 8",
                   L->path, L->prefix, n, (long long)out_ch, (long long)in_nc);
  m->scale = s;
  m->in_nc = m->out_nc = (int)in_nc;
  m->nf = (int)nf;
  m->convs = fr_calloc((size_t)m->num_conv + 2, sizeof *m->convs);
  m->prelu = fr_calloc((size_t)m->num_conv + 1, sizeof *m->prelu);
  if (!m->convs || !m->prelu)
    return fr_errf(L->err, FR_E_NOMEM, "%s: out of memory", L->path);
  for (int i = 0; i < m->num_conv + 2; i++) {
    char base[32];
    snprintf(base, sizeof base, "body.%d", 2 * i);
    fr__get_conv(L, &m->convs[i], base, i == m->num_conv + 1 ? out_ch : nf, i == 0 ? in_nc : nf, 3);
  }
  for (int i = 0; i < m->num_conv + 1 && !L->rc; i++) {
    snprintf(n, sizeof n, "body.%d.weight", 2 * i + 1);
    m->prelu[i] = fr__get(L, n, 1, (int64_t[]){nf});
    if (m->prelu[i])
      fr_tensor_reshape(m->prelu[i], 4, (int64_t[]){1, nf, 1, 1});
  }
  snprintf(m->desc, sizeof m->desc, "SRVGGNetCompact x%d, %d convs, %d features", s, m->num_conv, m->nf);
  return L->rc;
}

static bool fr__ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

static enum fr_status fr__pickle_refused(const char *path, struct fr_err *err) {
  return fr_errf(
      err, FR_E_UNSUPPORTED,
      "%s: a PyTorch pickle; flowrun loads upscale models from .safetensors only (loading a pickle can "
      "run code). Convert it once with: python -c \"import torch, safetensors.torch as s; "
      "d = torch.load('%s', map_location='cpu', weights_only=True); d = d.get('params_ema', "
      "d.get('params', d)); s.save_file({k: v.contiguous() for k, v in d.items()}, "
      "'model.safetensors')\"",
      path, path);
}

enum fr_status fr_upscaler_refuse_pickle(const char *path, struct fr_err *err) {
  if (fr__ends_with(path, ".pth") || fr__ends_with(path, ".pt") || fr__ends_with(path, ".ckpt") ||
      fr__ends_with(path, ".bin"))
    return fr__pickle_refused(path, err);
  return FR_OK;
}

enum fr_status fr_upscaler_load(struct fr_ctx *c, const char *path, struct fr_upscaler **out,
                                struct fr_err *err) {
  *out = NULL;
  if (fr_upscaler_refuse_pickle(path, err))
    return FR_E_UNSUPPORTED;
  struct fr_safetensors *st = NULL;
  enum fr_status rc = fr_st_open(path, &st, err);
  if (rc) {
    /* a pickle under another name: a zip archive (torch.save) or a raw pickle stream */
    FILE *f = fopen(path, "rb");
    unsigned char h[4] = {0};
    size_t got = f ? fread(h, 1, sizeof h, f) : 0;
    if (f)
      fclose(f);
    if (got >= 2 && ((h[0] == 'P' && h[1] == 'K') || (h[0] == 0x80 && h[1] >= 2 && h[1] <= 5)))
      return fr__pickle_refused(path, err);
    return rc;
  }
  struct fr_upscaler *m = fr_calloc(1, sizeof *m);
  if (!m) {
    fr_st_close(st);
    return fr_errf(err, FR_E_NOMEM, "%s: out of memory", path);
  }
  struct fr__ld L = {c, st, path, "", err, FR_OK};
  static const char *const prefixes[] = {"", "params_ema.", "params.", "module."};
  int kind = 0; /* 1 new RRDB, 2 old RRDB, 3 SRVGG */
  for (int i = 0; i < 4 && !kind; i++) {
    L.prefix = prefixes[i];
    if (fr__find(&L, "conv_first.weight"))
      kind = 1;
    else if (fr__find(&L, "model.0.weight") && fr__find(&L, "model.1.sub.0.RDB1.conv1.0.weight"))
      kind = 2;
    else if (fr__find(&L, "body.0.weight") && fr__dim(&L, "body.0.weight", 3) > 0)
      kind = 3;
  }
  if (!kind)
    rc = fr_errf(
        err, FR_E_FORMAT,
        "%s: not an upscale model flowrun knows: expected ESRGAN/Real-ESRGAN RRDBNet keys (conv_first.*, "
        "body.N.rdb1.* or model.0.*, model.1.sub.N.RDB1.*) or SRVGGNetCompact keys (body.N.*)",
        path);
  else if (kind == 3)
    rc = fr__load_srvgg(&L, m);
  else
    rc = fr__load_rrdb(&L, m, kind == 2);
  fr_st_close(st);
  if (rc) {
    fr_upscaler_free(m);
    return rc;
  }
  *out = m;
  return FR_OK;
}

/* ---- forward ---- */

static struct fr_tensor *fr__conv(struct fr_ctx *c, const struct fr__conv *cv, const struct fr_tensor *x) {
  return fr_conv2d(c, x, cv->w, cv->b, 1, (int)(cv->w->shape[2] / 2));
}

/* lrelu(conv(x)), x kept */
static struct fr_tensor *fr__conv_lrelu(struct fr_ctx *c, const struct fr__conv *cv,
                                        const struct fr_tensor *x) {
  struct fr_tensor *h = fr__conv(c, cv, x), *y = fr_leaky_relu(c, h, 0.2f);
  fr_tensor_free(h);
  return y;
}

/* y = x + s * r; frees r. */
static struct fr_tensor *fr__residual(struct fr_ctx *c, const struct fr_tensor *x, struct fr_tensor *r,
                                      float s) {
  struct fr_tensor *t = fr_affine(c, r, s, 0.0f), *y = fr_add(c, x, t);
  fr_tensor_free(r);
  fr_tensor_free(t);
  return y;
}

/* ResidualDenseBlock_5C: [1, nf, h, w] -> same. */
static struct fr_tensor *fr__rdb(struct fr_ctx *c, const struct fr__conv *cv, const struct fr_tensor *x) {
  const struct fr_tensor *parts[5] = {x};
  struct fr_tensor *feats[4] = {0}, *y = NULL;
  for (int j = 0; j < 5; j++) {
    struct fr_tensor *cat = j == 0 ? NULL : fr_concat(c, parts, j + 1, 1); /* [1, nf + j gc, h, w] */
    const struct fr_tensor *in = j == 0 ? x : cat;
    if (j < 4) {
      feats[j] = fr__conv_lrelu(c, &cv[j], in);
      parts[j + 1] = feats[j];
    } else {
      y = fr__residual(c, x, fr__conv(c, &cv[j], in), 0.2f);
    }
    fr_tensor_free(cat);
  }
  for (int j = 0; j < 4; j++)
    fr_tensor_free(feats[j]);
  return y;
}

/* pixel_unshuffle(r): [1, C, H, W] -> [1, C r r, H / r, W / r]; pixel_shuffle the other way, both as a
 * reshape + permute + reshape (torch's definitions). */
static struct fr_tensor *fr__unshuffle(struct fr_ctx *c, const struct fr_tensor *x, int r) {
  int64_t C = x->shape[1], H = x->shape[2], W = x->shape[3];
  struct fr_tensor *v = fr_copy(c, x);
  if (!v)
    return NULL;
  fr_tensor_reshape(v, 6, (int64_t[]){1, C, H / r, r, W / r, r});
  struct fr_tensor *p = fr_permute(c, v, (int[]){0, 1, 3, 5, 2, 4}); /* [1, C, r, r, H/r, W/r] */
  fr_tensor_free(v);
  if (p)
    fr_tensor_reshape(p, 4, (int64_t[]){1, C * r * r, H / r, W / r});
  return p;
}
static struct fr_tensor *fr__shuffle(struct fr_ctx *c, struct fr_tensor *x, int r) {
  int64_t C = x->shape[1] / (r * r), H = x->shape[2], W = x->shape[3];
  fr_tensor_reshape(x, 6, (int64_t[]){1, C, r, r, H, W});
  struct fr_tensor *p = fr_permute(c, x, (int[]){0, 1, 4, 2, 5, 3}); /* [1, C, H, r, W, r] */
  fr_tensor_reshape(x, 4, (int64_t[]){1, C * r * r, H, W});
  if (p)
    fr_tensor_reshape(p, 4, (int64_t[]){1, C, H * r, W * r});
  return p;
}

/* Reflect-pads the right and bottom of x [1, C, H, W] by pw, ph (< W, < H) as torch's "reflect". */
static struct fr_tensor *fr__reflect_pad(struct fr_ctx *c, const struct fr_tensor *x, int pw, int ph) {
  struct fr_tensor *cur = fr_copy(c, x);
  for (int axis = 3; axis >= 2 && cur; axis--) {
    int p = axis == 3 ? pw : ph;
    if (p == 0)
      continue;
    int64_t n = cur->shape[axis];
    const struct fr_tensor *parts[5];
    struct fr_tensor *sl[4] = {0};
    parts[0] = cur;
    for (int i = 0; i < p; i++)
      parts[i + 1] = sl[i] = fr_slice(c, cur, axis, n - 2 - i, 1);
    struct fr_tensor *next = fr_concat(c, parts, p + 1, axis);
    for (int i = 0; i < p; i++)
      fr_tensor_free(sl[i]);
    fr_tensor_free(cur);
    cur = next;
  }
  return cur;
}

static struct fr_tensor *fr__rrdb_forward(struct fr_ctx *c, const struct fr_upscaler *m,
                                          const struct fr_tensor *x) {
  int64_t H = x->shape[2], W = x->shape[3];
  struct fr_tensor *in = NULL;
  int r = m->unshuffle;
  if (r > 1) {
    int pw = (int)((r - W % r) % r), ph = (int)((r - H % r) % r);
    if (pw >= W || ph >= H) {
      fr_ctx_fail(c, FR_E_INVALID, "upscale: a %lldx%lld tile is too small for this model's pixel unshuffle",
                  (long long)W, (long long)H);
      return NULL;
    }
    struct fr_tensor *p = fr__reflect_pad(c, x, pw, ph);
    in = fr__unshuffle(c, p, r); /* [1, C r r, H/r, W/r] */
    fr_tensor_free(p);
  }
  struct fr_tensor *feat = fr__conv(c, &m->first, in ? in : x); /* [1, nf, h, w] */
  fr_tensor_free(in);
  struct fr_tensor *h = fr_copy(c, feat);
  for (int b = 0; b < m->nb && h; b++) {
    struct fr_tensor *t = h;
    for (int k = 0; k < 3; k++) {
      struct fr_tensor *n = fr__rdb(c, &m->rdb[(b * 3 + k) * 5], t);
      if (t != h)
        fr_tensor_free(t);
      t = n;
    }
    struct fr_tensor *n = fr__residual(c, h, t, 0.2f); /* RRDB: x + 0.2 rdb3(rdb2(rdb1(x))) */
    fr_tensor_free(h);
    h = n;
  }
  struct fr_tensor *body = fr__conv(c, &m->trunk, h);
  fr_tensor_free(h);
  h = fr_add(c, feat, body);
  fr_tensor_free(feat);
  fr_tensor_free(body);
  for (int i = 0; i < m->n_up; i++) { /* nearest 2x, conv, lrelu */
    struct fr_tensor *u = fr_upsample_nearest2x(c, h);
    fr_tensor_free(h);
    h = fr__conv_lrelu(c, &m->up[i], u);
    fr_tensor_free(u);
  }
  struct fr_tensor *t = fr__conv_lrelu(c, &m->hr, h);
  fr_tensor_free(h);
  struct fr_tensor *y = fr__conv(c, &m->last, t); /* [1, out, (H + ph) s, (W + pw) s] */
  fr_tensor_free(t);
  if (y && (y->shape[2] != H * m->scale || y->shape[3] != W * m->scale)) { /* drop the reflected padding */
    struct fr_tensor *a = fr_slice(c, y, 2, 0, H * m->scale);
    fr_tensor_free(y);
    y = fr_slice(c, a, 3, 0, W * m->scale);
    fr_tensor_free(a);
  }
  return y;
}

/* PReLU: max(0, x) + a min(0, x) = relu(x) + a (x - relu(x)), a [1, C, 1, 1]; frees x. */
static struct fr_tensor *fr__prelu(struct fr_ctx *c, struct fr_tensor *x, const struct fr_tensor *a) {
  struct fr_tensor *r = fr_leaky_relu(c, x, 0.0f), *neg = fr_sub(c, x, r);
  fr_tensor_free(x);
  struct fr_tensor *s = fr_mul(c, neg, a);
  fr_tensor_free(neg);
  struct fr_tensor *y = fr_add(c, r, s);
  fr_tensor_free(r);
  fr_tensor_free(s);
  return y;
}

static struct fr_tensor *fr__srvgg_forward(struct fr_ctx *c, const struct fr_upscaler *m,
                                           const struct fr_tensor *x) {
  struct fr_tensor *h = fr_copy(c, x);
  for (int i = 0; i < m->num_conv + 1 && h; i++) {
    struct fr_tensor *t = fr__conv(c, &m->convs[i], h);
    fr_tensor_free(h);
    h = t ? fr__prelu(c, t, m->prelu[i]) : NULL;
  }
  struct fr_tensor *t = h ? fr__conv(c, &m->convs[m->num_conv + 1], h) : NULL; /* [1, out s s, H, W] */
  fr_tensor_free(h);
  struct fr_tensor *y = t && m->scale > 1 ? fr__shuffle(c, t, m->scale) : (t ? fr_copy(c, t) : NULL);
  fr_tensor_free(t);
  /* + the input, nearest-upsampled by the scale (a power of two: repeated 2x) */
  struct fr_tensor *base = fr_copy(c, x);
  for (int s = m->scale; s > 1 && base; s /= 2) {
    struct fr_tensor *u = fr_upsample_nearest2x(c, base);
    fr_tensor_free(base);
    base = u;
  }
  struct fr_tensor *out = fr_add(c, y, base);
  fr_tensor_free(y);
  fr_tensor_free(base);
  return out;
}

struct fr_tensor *fr_upscaler_forward(struct fr_ctx *c, const struct fr_upscaler *m,
                                      const struct fr_tensor *x) {
  if (!x || fr_ctx_failed(c))
    return NULL;
  if (x->ndim != 4 || x->shape[0] != 1 || x->shape[1] != m->in_nc) {
    char s[64];
    fr_ctx_fail(c, FR_E_SHAPE, "upscale model: expected an input [1, %d, h, w], got %s", m->in_nc,
                fr_shape_str(x, s, sizeof s));
    return NULL;
  }
  return m->arch == FR_UPSCALER_RRDB ? fr__rrdb_forward(c, m, x) : fr__srvgg_forward(c, m, x);
}

/* ---- tiled_scale ---- */

/* ComfyUI's tile positions along an axis of n: [0] when it fits, else range(0, n - overlap, tile - overlap),
 * each moved back so the tile [pos, pos + min(tile, n - pos)) stays inside. Returns the count. */
static int fr__positions(int64_t n, int tile, int overlap, int64_t *pos, int max) {
  if (n <= tile) {
    pos[0] = 0;
    return 1;
  }
  int k = 0;
  for (int64_t p = 0; p < n - overlap && k < max; p += tile - overlap) {
    int64_t q = p < n - overlap ? p : n - overlap;
    pos[k++] = q > 0 ? q : 0;
  }
  return k;
}

enum fr_status fr_upscaler_run_tiled(struct fr_ctx *c, const struct fr_upscaler *m,
                                     const struct fr_tensor *img, int tile, int overlap,
                                     fr_upscale_progress_fn progress, void *user, struct fr_tensor **out,
                                     struct fr_err *err) {
  *out = NULL;
  char s[64];
  if (!img || img->dtype != FR_F32 || img->ndim != 4 || img->shape[3] < m->in_nc)
    return fr_errf(err, FR_E_SHAPE,
                   "upscale: expected an F32 image [B, H, W, C] with at least %d channels, got %s", m->in_nc,
                   img ? fr_shape_str(img, s, sizeof s) : "nothing");
  if (tile < 16 || overlap < 0 || overlap * 2 >= tile)
    return fr_errf(err, FR_E_INVALID,
                   "upscale: tile %d and overlap %d: need tile >= 16 and 0 <= 2 overlap < tile", tile,
                   overlap);
  int64_t B = img->shape[0], H = img->shape[1], W = img->shape[2], C = img->shape[3], S = m->scale;
  int64_t OH = H * S, OW = W * S, K = m->out_nc;
  if (OH > 65536 || OW > 65536)
    return fr_errf(err, FR_E_INVALID, "upscale: the result %lldx%lld is too large", (long long)OW,
                   (long long)OH);
  int64_t py[4096], px[4096];
  int ny = fr__positions(H, tile, overlap, py, 4096), nx = fr__positions(W, tile, overlap, px, 4096);
  struct fr_tensor *res = fr_tensor_f32(4, (int64_t[]){B, OH, OW, K});
  float *acc = fr_malloc((size_t)(K * OH * OW) * sizeof *acc),
        *wsum = fr_malloc((size_t)(OH * OW) * sizeof *wsum);
  enum fr_status rc = FR_OK;
  if (!res || !acc || !wsum) {
    rc = fr_errf(err, FR_E_NOMEM, "upscale: out of memory for a %lldx%lld result", (long long)OW,
                 (long long)OH);
    goto done;
  }
  int total = (int)B * ny * nx, done_n = 0;
  /* One tile: its output as it is (ComfyUI calls the model directly then), no ramp to divide out again. */
  int64_t feather = ny == 1 && nx == 1 ? 0 : (int64_t)llround((double)overlap * S);
  for (int64_t b = 0; b < B && !rc; b++) {
    memset(acc, 0, (size_t)(K * OH * OW) * sizeof *acc);
    memset(wsum, 0, (size_t)(OH * OW) * sizeof *wsum);
    const float *src = (const float *)img->data + b * H * W * C;
    for (int iy = 0; iy < ny && !rc; iy++)
      for (int ix = 0; ix < nx && !rc; ix++) {
        int64_t y0 = py[iy], x0 = px[ix], th = H - y0 < tile ? H - y0 : tile,
                tw = W - x0 < tile ? W - x0 : tile;
        /* the tile as [1, C, th, tw] */
        struct fr_tensor *hin = fr_tensor_f32(4, (int64_t[]){1, m->in_nc, th, tw});
        if (!hin) {
          rc = fr_errf(err, FR_E_NOMEM, "upscale: out of memory");
          break;
        }
        float *d = hin->data;
        for (int64_t ch = 0; ch < m->in_nc; ch++)
          for (int64_t y = 0; y < th; y++)
            for (int64_t x = 0; x < tw; x++)
              d[(ch * th + y) * tw + x] = src[((y0 + y) * W + x0 + x) * C + ch];
        struct fr_tensor *dx = fr_ctx_upload(c, hin), *dy = fr_upscaler_forward(c, m, dx);
        struct fr_tensor *hy = dy ? fr_ctx_download(c, dy) : NULL;
        fr_tensor_free(hin);
        fr_tensor_free(dx);
        fr_tensor_free(dy);
        if (!hy) {
          rc = fr_ctx_failed(c) ? fr_ctx_status(c, err) : fr_errf(err, FR_E_NOMEM, "upscale: out of memory");
          fr_ctx_clear(c); /* the context stays usable (a retry with smaller tiles) */
          break;
        }
        /* blend: weight (t + 1) / f at the t-th pixel from each edge of the tile's output */
        int64_t oh = th * S, ow = tw * S;
        const float *o = hy->data;
        for (int64_t y = 0; y < oh; y++) {
          double wy = 1.0;
          if (feather < oh)
            for (int64_t t = 0; t < feather; t++) {
              if (y == t)
                wy *= (double)(t + 1) / feather;
              if (y == oh - 1 - t)
                wy *= (double)(t + 1) / feather;
            }
          for (int64_t x = 0; x < ow; x++) {
            double wx = 1.0;
            if (feather < ow && (x < feather || x >= ow - feather))
              for (int64_t t = 0; t < feather; t++) {
                if (x == t)
                  wx *= (double)(t + 1) / feather;
                if (x == ow - 1 - t)
                  wx *= (double)(t + 1) / feather;
              }
            float wgt = (float)(wy * wx);
            int64_t gy = y0 * S + y, gx = x0 * S + x;
            for (int64_t k = 0; k < K; k++)
              acc[(k * OH + gy) * OW + gx] += o[(k * oh + y) * ow + x] * wgt;
            wsum[gy * OW + gx] += wgt;
          }
        }
        fr_tensor_free(hy);
        done_n++;
        if (progress)
          rc = progress(user, done_n, total);
        if (rc)
          fr_errf(err, rc, "upscale: stopped");
      }
    float *r = (float *)res->data + b * OH * OW * K;
    for (int64_t i = 0; i < OH * OW && !rc; i++)
      for (int64_t k = 0; k < K; k++) {
        float v = acc[k * OH * OW + i] / wsum[i];
        r[i * K + k] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
      }
  }
done:
  fr_free(acc);
  fr_free(wsum);
  if (rc) {
    fr_tensor_free(res);
    return rc;
  }
  *out = res;
  return FR_OK;
}
