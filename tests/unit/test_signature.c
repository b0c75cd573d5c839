/* Signatures: what goes into a node's key and what stays out (DESIGN.md, "Execution and the cache"). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/signature.h"
#include "tests/test.h"
#include "tests/unit/tgraph.h"

static const struct fr_input_spec num_in[] = {
    {.name = "value", .type = FR_T_INT, .def = "0", .min = 1, .max = 0},
    {.name = "scale", .type = FR_T_FLOAT, .def = "1.0", .min = 1, .max = 0}};
static const struct fr_output_spec num_out[] = {{.name = "out", .type = "NUM"},
                                                {.name = "twice", .type = "NUM"}};
static const struct fr_node_spec num_spec = {
    .name = "Num", .version = 1, .inputs = num_in, .n_inputs = 2, .outputs = num_out, .n_outputs = 2};
static const struct fr_node_spec num_spec_v2 = {
    .name = "Num", .version = 2, .inputs = num_in, .n_inputs = 2, .outputs = num_out, .n_outputs = 2};
static const struct fr_node_spec noise_spec = {.name = "Noise",
                                               .version = 1,
                                               .inputs = num_in,
                                               .n_inputs = 2,
                                               .outputs = num_out,
                                               .n_outputs = 2,
                                               .flags = FR_NODE_NONDETERMINISTIC};

static const struct fr_input_spec add_in[] = {{.name = "b", .type = "NUM"},
                                              {.name = "a", .type = "NUM"},
                                              {.name = "note", .type = FR_T_STRING, .flags = FR_IN_OPTIONAL}};
static const struct fr_output_spec add_out[] = {{.name = "out", .type = "NUM"}};
static const struct fr_node_spec add_spec = {
    .name = "Add", .version = 1, .inputs = add_in, .n_inputs = 3, .outputs = add_out, .n_outputs = 1};

static const struct fr_input_spec load_in[] = {{.name = "file", .type = FR_T_STRING, .flags = FR_IN_FILE}};
static const struct fr_node_spec load_spec = {
    .name = "LoadThing", .version = 1, .inputs = load_in, .n_inputs = 1, .outputs = add_out, .n_outputs = 1};

static const struct fr_input_spec save_in[] = {{.name = "x", .type = "NUM"}};
static const struct fr_output_spec save_out[] = {{.name = "files", .type = FR_T_STRING}};
static const struct fr_node_spec save_spec = {.name = "Save",
                                              .version = 1,
                                              .inputs = save_in,
                                              .n_inputs = 1,
                                              .outputs = save_out,
                                              .n_outputs = 1,
                                              .flags = FR_NODE_OUTPUT};

struct sigs {
  struct fr_key k[TG_MAX];
};

static void sign_all(struct fr_sig_ctx *ctx, struct tg *t, struct sigs *s) {
  struct fr_err err = {{0}};
  for (int i = 0; i < t->g.n_nodes; i++)
    CHECK_OK(fr_signature_node(ctx, &t->g, i, s->k, &s->k[i], &err), &err);
}

/* a, c: Num; b = Add(a, c); d = Add(c, c); s = Save(b). ids are parameters so renames can be tested. */
static void build(struct tg *t, const char *ida, int64_t aval) {
  tg_init(t);
  int a = tg_node(t, ida, &num_spec);
  tg_lit(t, a, "value", fr_value_int(aval));
  int c = tg_node(t, "c", &num_spec);
  tg_lit(t, c, "value", fr_value_int(7));
  int b = tg_node(t, "b", &add_spec);
  tg_link(t, b, "a", a, 0);
  tg_link(t, b, "b", c, 0);
  int d = tg_node(t, "d", &add_spec);
  tg_link(t, d, "a", c, 0);
  tg_link(t, d, "b", c, 1);
  int s = tg_node(t, "s", &save_spec);
  tg_link(t, s, "x", b, 0);
}

static bool same(const struct fr_key *x, const struct fr_key *y) {
  return fr_key_equal(x, y);
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  fputs(text, f);
  fclose(f);
}

/* Per-output keys (FR_IN_ONLY_FOR): Split has x only for output 0, y only for output 1, z for both;
 * p = Add(split.0), q = Add(split.1). Signed as the engine does: node signatures, then each output's link
 * signature, which the links downstream hash. */
static const struct fr_input_spec split_in[] = {
    {.name = "x", .type = FR_T_INT, .def = "0", .flags = FR_IN_ONLY_FOR(0)},
    {.name = "y", .type = FR_T_INT, .def = "0", .flags = FR_IN_ONLY_FOR(1)},
    {.name = "z", .type = FR_T_INT, .def = "0"}};
static const struct fr_node_spec split_spec = {
    .name = "Split", .version = 1, .inputs = split_in, .n_inputs = 3, .outputs = num_out, .n_outputs = 2};

static void split_keys(struct fr_sig_ctx *ctx, int x, int y, int z, struct fr_key out[4]) {
  struct tg t;
  tg_init(&t);
  int sp = tg_node(&t, "split", &split_spec);
  tg_lit(&t, sp, "x", fr_value_int(x));
  tg_lit(&t, sp, "y", fr_value_int(y));
  tg_lit(&t, sp, "z", fr_value_int(z));
  int p = tg_node(&t, "p", &add_spec), q = tg_node(&t, "q", &add_spec);
  tg_link(&t, p, "a", sp, 0);
  tg_link(&t, p, "b", sp, 0);
  tg_link(&t, q, "a", sp, 1);
  tg_link(&t, q, "b", sp, 1);
  struct fr_key sigs[TG_MAX], rows[TG_MAX][2], *link[TG_MAX] = {0};
  struct fr_err err = {{0}};
  struct fr_sig_ctx c = *ctx;
  c.link_sigs = link;
  for (int i = 0; i < t.g.n_nodes; i++) { /* built in topological order */
    CHECK_OK(fr_signature_node(&c, &t.g, i, sigs, &sigs[i], &err), &err);
    for (int o = 0; o < t.g.nodes[i].spec->n_outputs; o++)
      CHECK_OK(fr_signature_link(&c, &t.g, i, o, sigs, &rows[i][o], &err), &err);
    link[i] = rows[i];
  }
  out[0] = rows[sp][0], out[1] = rows[sp][1], out[2] = sigs[p], out[3] = sigs[q];
  tg_free(&t);
}

static void test_split_outputs(struct fr_sig_ctx *ctx) {
  struct fr_key k0[4], kx[4], ky[4], kz[4];
  split_keys(ctx, 1, 2, 3, k0);
  split_keys(ctx, 9, 2, 3, kx);
  split_keys(ctx, 1, 9, 3, ky);
  split_keys(ctx, 1, 2, 9, kz);
  CHECK(!same(&k0[0], &k0[1]));                         /* the two outputs' link keys differ */
  CHECK(!same(&kx[0], &k0[0]) && same(&kx[1], &k0[1])); /* x: output 0 only */
  CHECK(!same(&kx[2], &k0[2]) && same(&kx[3], &k0[3])); /* ... so p re-runs, q does not */
  CHECK(same(&ky[0], &k0[0]) && !same(&ky[1], &k0[1]));
  CHECK(same(&ky[2], &k0[2]) && !same(&ky[3], &k0[3]));
  CHECK(!same(&kz[2], &k0[2]) && !same(&kz[3], &k0[3])); /* z: both */
  /* a node without such inputs links by its node signature, as before */
  struct tg t;
  build(&t, "a", 3);
  struct sigs s;
  sign_all(ctx, &t, &s);
  struct fr_key l;
  struct fr_err err = {{0}};
  CHECK_OK(fr_signature_link(ctx, &t.g, 0, 1, s.k, &l, &err), &err);
  CHECK(same(&l, &s.k[0]));
  tg_free(&t);
}

int main(void) {
  struct fr_fp_memo memo = {0};
  struct fr_sig_ctx ctx = {.device = "cpu", .dtype = "", .output_dir = "out", .memo = &memo};
  struct tg t1, t2;
  struct sigs s1, s2;

  /* Same graph built twice: same keys; hex is 32 lowercase digits. */
  build(&t1, "a", 3);
  build(&t2, "a", 3);
  sign_all(&ctx, &t1, &s1);
  sign_all(&ctx, &t2, &s2);
  for (int i = 0; i < 5; i++)
    CHECKF(same(&s1.k[i], &s2.k[i]), "node %d", i);
  char hex[33];
  fr_key_hex(&s1.k[0], hex);
  CHECK(strlen(hex) == 32 && strspn(hex, "0123456789abcdef") == 32);
  /* Distinct nodes get distinct keys. */
  CHECK(!same(&s1.k[0], &s1.k[1]) && !same(&s1.k[2], &s1.k[3]));
  tg_free(&t2);

  /* Renaming a node keeps every key, and the id is not in the encoded bytes at all. */
  build(&t2, "zz_renamed_node_id", 3);
  sign_all(&ctx, &t2, &s2);
  for (int i = 0; i < 5; i++)
    CHECKF(same(&s1.k[i], &s2.k[i]), "node %d after rename", i);
  struct fr_buf b = {0};
  struct fr_err err = {{0}};
  CHECK_OK(fr_signature_encode(&ctx, &t2.g, 0, s2.k, &b, &err), &err);
  CHECK(b.len > 0 && memmem(b.data, b.len, "zz_renamed_node_id", 18) == NULL);
  CHECK(memmem(b.data, b.len, "Num", 3) != NULL);
  fr_buf_free(&b);
  tg_free(&t2);

  /* Changing one literal (a.value) changes exactly a, and its descendants b and s; c and d keep theirs. */
  build(&t2, "a", 4);
  sign_all(&ctx, &t2, &s2);
  CHECK(!same(&s1.k[0], &s2.k[0]));
  CHECK(same(&s1.k[1], &s2.k[1]));
  CHECK(!same(&s1.k[2], &s2.k[2]));
  CHECK(same(&s1.k[3], &s2.k[3]));
  CHECK(!same(&s1.k[4], &s2.k[4]));
  tg_free(&t2);

  /* An optional input set vs unset; a link to another output index of the same node. */
  build(&t2, "a", 3);
  tg_lit(&t2, 2, "note", fr_value_string(""));
  sign_all(&ctx, &t2, &s2);
  CHECK(!same(&s1.k[2], &s2.k[2]));
  tg_free(&t2);
  build(&t2, "a", 3);
  tg_link(&t2, 3, "b", 1, 0); /* d.b = c.out instead of c.twice */
  sign_all(&ctx, &t2, &s2);
  CHECK(!same(&s1.k[3], &s2.k[3]));
  tg_free(&t2);

  /* Floats: 0.0 and -0.0 are one key, 1.0 and 1.5 are two. */
  struct fr_key kf[3];
  double fl[3] = {0.0, -0.0, 1.5};
  for (int i = 0; i < 3; i++) {
    tg_init(&t2);
    int n = tg_node(&t2, "n", &num_spec);
    tg_lit(&t2, n, "scale", fr_value_float(fl[i]));
    CHECK_OK(fr_signature_node(&ctx, &t2.g, 0, s2.k, &kf[i], &err), &err);
    tg_free(&t2);
  }
  CHECK(same(&kf[0], &kf[1]));
  CHECK(!same(&kf[0], &kf[2]));

  /* Spec version, device and dtype are in the key. */
  struct fr_key kv[4];
  const struct fr_node_spec *specs[2] = {&num_spec, &num_spec_v2};
  for (int i = 0; i < 2; i++) {
    tg_init(&t2);
    tg_node(&t2, "n", specs[i]);
    CHECK_OK(fr_signature_node(&ctx, &t2.g, 0, s2.k, &kv[i], &err), &err);
    struct fr_sig_ctx c2 = ctx;
    if (i == 0) {
      c2.device = "cuda";
      CHECK_OK(fr_signature_node(&c2, &t2.g, 0, s2.k, &kv[2], &err), &err);
      c2.device = "cpu";
      c2.dtype = "f16";
      CHECK_OK(fr_signature_node(&c2, &t2.g, 0, s2.k, &kv[3], &err), &err);
    }
    tg_free(&t2);
  }
  CHECK(!same(&kv[0], &kv[1]));
  CHECK(!same(&kv[0], &kv[2]));
  CHECK(!same(&kv[0], &kv[3]));
  CHECK(!same(&kv[2], &kv[3]));

  /* The nonce changes non-deterministic nodes only; the output folder changes output nodes only. */
  {
    tg_init(&t2);
    int n0 = tg_node(&t2, "det", &num_spec);
    tg_node(&t2, "rnd", &noise_spec);
    int n2 = tg_node(&t2, "save", &save_spec);
    tg_link(&t2, n2, "x", n0, 0);
    struct fr_key k0[3], k1[3];
    struct fr_sig_ctx c2 = ctx;
    for (int i = 0; i < 3; i++)
      CHECK_OK(fr_signature_node(&ctx, &t2.g, i, k0, &k0[i], &err), &err);
    c2.nonce[0] = 12345;
    for (int i = 0; i < 3; i++)
      CHECK_OK(fr_signature_node(&c2, &t2.g, i, k1, &k1[i], &err), &err);
    CHECK(same(&k0[0], &k1[0]) && !same(&k0[1], &k1[1]) && same(&k0[2], &k1[2]));
    c2 = ctx;
    c2.output_dir = "elsewhere";
    for (int i = 0; i < 3; i++)
      CHECK_OK(fr_signature_node(&c2, &t2.g, i, k1, &k1[i], &err), &err);
    CHECK(same(&k0[0], &k1[0]) && same(&k0[1], &k1[1]) && !same(&k0[2], &k1[2]));
    tg_free(&t2);
  }

  /* Output keys: distinct per index, deterministic. */
  struct fr_key o0, o1, o0b;
  fr_signature_output(&s1.k[0], 0, &o0);
  fr_signature_output(&s1.k[0], 1, &o1);
  fr_signature_output(&s1.k[0], 0, &o0b);
  CHECK(!same(&o0, &o1) && same(&o0, &o0b) && !same(&o0, &s1.k[0]));
  test_split_outputs(&ctx);
  tg_free(&t1);

  /* File inputs: keyed by content, not by name; a content change with the same size is seen (mtime). */
  const char *dir = fr_test_tmpdir("test_signature");
  char p1[4200], p2[4200];
  snprintf(p1, sizeof p1, "%s/one.bin", dir);
  snprintf(p2, sizeof p2, "%s/two.bin", dir);
  write_file(p1, "hello weights");
  write_file(p2, "hello weights");
  struct fr_key kfile[4];
  const char *paths[2] = {p1, p2};
  for (int i = 0; i < 2; i++) {
    tg_init(&t2);
    int n = tg_node(&t2, "load", &load_spec);
    tg_file(&t2, n, "file", paths[i]);
    CHECK_OK(fr_signature_node(&ctx, &t2.g, 0, s2.k, &kfile[i], &err), &err);
    tg_free(&t2);
  }
  CHECK(same(&kfile[0], &kfile[1]));
  write_file(p2, "jello weights"); /* same size */
  struct timespec ts[2] = {{.tv_sec = 1000000000, .tv_nsec = 0}, {.tv_sec = 1000000000, .tv_nsec = 0}};
  utimensat(AT_FDCWD, p2, ts, 0); /* a different mtime than the first write, whatever the clock did */
  tg_init(&t2);
  int nl = tg_node(&t2, "load", &load_spec);
  tg_file(&t2, nl, "file", p2);
  CHECK_OK(fr_signature_node(&ctx, &t2.g, 0, s2.k, &kfile[2], &err), &err);
  CHECK(!same(&kfile[0], &kfile[2]));
  /* A file that is gone: FR_E_IO naming the node, the input and the path. */
  remove(p2);
  enum fr_status rc = fr_signature_node(&ctx, &t2.g, 0, s2.k, &kfile[3], &err);
  CHECKF(rc == FR_E_IO, "rc %d", rc);
  CHECKF(strstr(err.msg, "two.bin") && strstr(err.msg, "load") && strstr(err.msg, "file"), "%s", err.msg);
  printf("missing file: %s\n", err.msg);
  tg_free(&t2);

  /* The memo: a fingerprint is computed once per path|size|mtime. */
  CHECK(memo.n >= 2);
  fr_fp_memo_free(&memo);
  return fr_test_done();
}
