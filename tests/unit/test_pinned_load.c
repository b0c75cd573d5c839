/* A pinned checkpoint changed between runs of one engine (as under `flowrun serve`), and changed between the
 * run's pin check and the model load: the bytes used are always bytes that match the pin.
 *  - run 1 with the right pin: ok;
 *  - one data byte changed in place, size and mtime put back (the memo of file hashes must see the inode and
 *    the change time, and the loaded models must be of the file's current version): run 2 fails naming the
 *    file and the pin; the byte put back: run 3 ok again;
 *  - the byte changed while the run is already going (after the pin check, before the VAE loads): the load
 *    hashes what it reads and refuses it. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/flowrun.h"
#include "nodes/registry.h"
#include "tests/test.h"

static const char *tmp;
static char models[4200], ckpt[4300];
static long flip_at; /* file offset of the byte the tests change */

static bool copy_file(const char *from, const char *to) {
  size_t n = 0;
  char *b = fr_test_read_file(from, &n);
  FILE *f = b ? fopen(to, "wb") : NULL;
  bool ok = f && fwrite(b, 1, n, f) == n;
  if (f)
    ok = fclose(f) == 0 && ok;
  free(b);
  return ok;
}

/* Changes (xor 0xff) the byte at flip_at in place and puts the file's atime and mtime back. */
static void flip_byte(void) {
  struct stat sb;
  CHECK(stat(ckpt, &sb) == 0);
  FILE *f = fopen(ckpt, "r+b");
  CHECK(f != NULL);
  if (!f)
    return;
  fseek(f, flip_at, SEEK_SET);
  int c = fgetc(f);
  fseek(f, flip_at, SEEK_SET);
  fputc(c ^ 0xff, f);
  fclose(f);
  struct timespec ts[2] = {sb.st_atim, sb.st_mtim};
  CHECK(utimensat(AT_FDCWD, ckpt, ts, 0) == 0);
  struct stat sa;
  CHECK(stat(ckpt, &sa) == 0 && sa.st_size == sb.st_size && sa.st_mtim.tv_sec == sb.st_mtim.tv_sec &&
        sa.st_mtim.tv_nsec == sb.st_mtim.tv_nsec);
}

static bool flip_on_decode;
static void on_event(void *user, const struct fr_event *ev) {
  (void)user;
  if (ev->kind == FR_EV_NODE_START && flip_on_decode && !strcmp(ev->node, "d")) {
    flip_on_decode = false;
    flip_byte();
  }
}

static struct fr_engine *engine(struct fr_err *err) {
  return fr_test_engine(models, tmp, 2, on_event, NULL, err);
}

static enum fr_status run(struct fr_engine *e, const char *yaml, struct fr_err *err) {
  return fr_test_run_yaml(e, yaml, "pinned.yaml", tmp, err);
}

int main(void) {
  tmp = fr_test_tmpdir("test_pinned_load");
  const char *fx = fr_test_fixtures();
  if (!fx)
    return fr_test_done();
  char src[4200], cmd[4400], sha[65] = "";
  snprintf(src, sizeof src, "%s/models/sd15-tiny.safetensors", fx);
  snprintf(models, sizeof models, "%s/models", tmp);
  snprintf(ckpt, sizeof ckpt, "%s/pinned.safetensors", models);
  mkdir(models, 0755);
  CHECK(copy_file(src, ckpt));
  /* the pin, from coreutils (independent of flowrun's SHA-256) */
  snprintf(cmd, sizeof cmd, "sha256sum '%s'", ckpt);
  FILE *p = popen(cmd, "r");
  if (!p || fscanf(p, "%64s", sha) != 1 || strlen(sha) != 64) {
    if (p)
      pclose(p);
    fr_test_skip("no sha256sum to compute the pin");
    return fr_test_done();
  }
  pclose(p);
  /* a byte in the middle of the data: the last 4 KiB are tensor data in any checkpoint of this size */
  struct stat sb;
  CHECK(stat(ckpt, &sb) == 0);
  flip_at = (long)sb.st_size - 4096;

  char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "flowrun: 1\n"
           "nodes:\n"
           "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: {file: pinned.safetensors, sha256: %s}}}\n"
           "  empty: {type: EmptyLatent, inputs: {width: 64, height: 64}}\n"
           "  d: {type: VAEDecode, inputs: {samples: empty, vae: ckpt.vae}}\n"
           "  save: {type: SaveImageData, inputs: {images: d, filename: pinned-out.safetensors}}\n",
           sha);
  struct fr_err err = {{0}};
  struct fr_engine *e = engine(&err);
  if (!e)
    return fr_test_done();
  CHECK_OK(run(e, yaml, &err), &err);

  flip_byte();
  enum fr_status rc = run(e, yaml, &err);
  printf("changed between runs: %s\n", err.msg);
  CHECKF(rc == FR_E_INVALID && strstr(err.msg, "pinned.safetensors") && strstr(err.msg, sha),
         "changed between runs: status %d, '%s'", rc, err.msg);
  flip_byte(); /* back to the pinned bytes */
  CHECK_OK(run(e, yaml, &err), &err);
  fr_engine_free(e);

  /* changed while the run goes: the engine's pin check passed, the load must not take the new bytes */
  e = engine(&err);
  if (!e)
    return fr_test_done();
  flip_on_decode = true;
  rc = run(e, yaml, &err);
  printf("changed during the run: %s\n", err.msg);
  CHECKF(!flip_on_decode, "the decode started");
  CHECKF(rc == FR_E_INVALID && strstr(err.msg, "node d (VAEDecode)") &&
             strstr(err.msg, "pinned.safetensors") && strstr(err.msg, "but the graph pins") &&
             strstr(err.msg, sha),
         "changed during the run: status %d, '%s'", rc, err.msg);
  fr_engine_free(e);
  return fr_test_done();
}
