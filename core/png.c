/* PNG reading and writing through libpng (see core/png.h).
 *
 * libpng reports errors by longjmp. Every function that calls libpng keeps its state (file, buffers,
 * libpng structs) in a struct owned by its caller, and the setjmp lives in a separate function, so
 * nothing the error path needs is an automatic variable changed between setjmp and longjmp. A libpng
 * error becomes FR_E_FORMAT (reading) or FR_E_IO (writing) with libpng's message and the file name. */
#include "core/png.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/alloc.h"
#include "core/file.h"

/* Largest width or height accepted. Diffusion images are at most a few thousand pixels a side; the bound
 * keeps a file that declares a huge size from making us allocate gigabytes. */
#define FR__PNG_MAX_DIM 16384
/* Deflate cannot compress better than about 1032:1, so a file smaller than its raw image size over this
 * ratio is truncated or lying about its size: refuse it before allocating the image. */
#define FR__DEFLATE_MAX_RATIO 1100

struct fr__png_state {
  const char *path;
  FILE *f;
  png_structp png;
  png_infop info;
  unsigned char *raw;    /* decoded rows (reading) or 8-bit rows (writing) */
  png_bytep *rows;       /* row pointers into raw */
  struct fr_tensor *out; /* reading: the result */
  char msg[256];         /* libpng's error message */
  char warn[200];        /* libpng's last warning: often the reason behind the error */
  int writing;
  long file_size;
  /* fr_png_read_text */
  const char *key;
  char *text;
};

static void fr__png_error(png_structp png, png_const_charp msg) {
  struct fr__png_state *st = png_get_error_ptr(png);
  snprintf(st->msg, sizeof st->msg, "%s", msg ? msg : "unknown libpng error");
  png_longjmp(png, 1);
}

static void fr__png_warning(png_structp png, png_const_charp msg) {
  /* Warnings (a bad CRC in an ancillary chunk, an unknown chunk) do not stop a read: keep the last one to
   * explain an error that follows ("Invalid IHDR data" after "Image width exceeds user limit"). */
  struct fr__png_state *st = png_get_error_ptr(png);
  snprintf(st->warn, sizeof st->warn, "%s", msg ? msg : "");
}

/* The message for a libpng error while reading: a short read is a truncated file. */
static enum fr_status fr__png_read_failed(struct fr__png_state *st, struct fr_err *err) {
  if (st->f && feof(st->f))
    return fr_errf(err, FR_E_FORMAT, "%s: invalid PNG: file ends early (truncated)", st->path);
  if (st->warn[0])
    return fr_errf(err, FR_E_FORMAT, "%s: invalid PNG: %s (%s)", st->path, st->msg, st->warn);
  return fr_errf(err, FR_E_FORMAT, "%s: invalid PNG: %s", st->path, st->msg);
}

static void fr__png_cleanup(struct fr__png_state *st) {
  if (st->png) {
    if (st->writing)
      png_destroy_write_struct(&st->png, st->info ? &st->info : NULL);
    else
      png_destroy_read_struct(&st->png, st->info ? &st->info : NULL, NULL);
  }
  st->png = NULL;
  st->info = NULL;
  if (st->f)
    fclose(st->f);
  st->f = NULL;
  fr_free(st->rows);
  st->rows = NULL;
  fr_free(st->raw);
  st->raw = NULL;
}

/* Opens st->path and checks the signature; leaves the file positioned after it. */
static enum fr_status fr__png_open(struct fr__png_state *st, struct fr_err *err) {
  st->f = fopen(st->path, "rb");
  if (!st->f)
    return fr_errf(err, errno == ENOENT ? FR_E_NOTFOUND : FR_E_IO, "%s: cannot open: %s", st->path,
                   strerror(errno));
  struct stat sb;
  if (fstat(fileno(st->f), &sb) != 0)
    return fr_errf(err, FR_E_IO, "%s: cannot stat: %s", st->path, strerror(errno));
  if (!S_ISREG(sb.st_mode))
    return fr_errf(err, FR_E_IO, "%s: not a regular file", st->path);
  st->file_size = (long)sb.st_size;
  if (sb.st_size == 0)
    return fr_errf(err, FR_E_FORMAT, "%s: empty file, not a PNG image", st->path);
  unsigned char sig[8];
  size_t n = fread(sig, 1, sizeof sig, st->f);
  if (n < sizeof sig || png_sig_cmp(sig, 0, sizeof sig) != 0)
    return fr_errf(err, FR_E_FORMAT, "%s: not a PNG image (bad signature)", st->path);
  return FR_OK;
}

static enum fr_status fr__png_create_read(struct fr__png_state *st, struct fr_err *err) {
  st->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, st, fr__png_error, fr__png_warning);
  if (!st->png)
    return fr_errf(err, FR_E_NOMEM, "%s: out of memory creating the PNG reader", st->path);
  st->info = png_create_info_struct(st->png);
  if (!st->info)
    return fr_errf(err, FR_E_NOMEM, "%s: out of memory creating the PNG reader", st->path);
  return FR_OK;
}

/* The libpng part of fr_png_read. Returns 0 on success, 1 after a libpng error (message in st->msg),
 * or a negative fr_status for our own failures (message in err). */
static int fr__png_read_body(struct fr__png_state *st, struct fr_err *err) {
  if (setjmp(png_jmpbuf(st->png)))
    return 1;
  png_init_io(st->png, st->f);
  png_set_sig_bytes(st->png, 8);
  png_set_user_limits(st->png, FR__PNG_MAX_DIM, FR__PNG_MAX_DIM);
  /* The image needs no text: skip text chunks unread (a large zTXt is not inflated for nothing). */
  static const png_byte text_chunks[] = {'t', 'E', 'X', 't', 0, 'z', 'T', 'X', 't', 0, 'i', 'T', 'X', 't', 0};
  png_set_keep_unknown_chunks(st->png, PNG_HANDLE_CHUNK_NEVER, text_chunks, 3);
  png_read_info(st->png, st->info);

  png_uint_32 w = png_get_image_width(st->png, st->info);
  png_uint_32 h = png_get_image_height(st->png, st->info);
  int color = png_get_color_type(st->png, st->info);
  int depth = png_get_bit_depth(st->png, st->info);
  bool trns = png_get_valid(st->png, st->info, PNG_INFO_tRNS) != 0;
  int file_channels = png_get_channels(st->png, st->info); /* as stored, before the transforms below */

  /* Palette → RGB, grey below 8 bits → 8 bits, tRNS → an alpha channel. 16-bit stays 16-bit. */
  png_set_expand(st->png);
  /* Grey with alpha becomes RGBA (images are 1, 3 or 4 channels); plain grey stays one channel. */
  if ((color == PNG_COLOR_TYPE_GRAY && trns) || color == PNG_COLOR_TYPE_GRAY_ALPHA)
    png_set_gray_to_rgb(st->png);
  png_set_interlace_handling(st->png);
  png_read_update_info(st->png, st->info);

  int channels = png_get_channels(st->png, st->info);
  int out_depth = png_get_bit_depth(st->png, st->info);
  size_t rowbytes = png_get_rowbytes(st->png, st->info);
  if ((channels != 1 && channels != 3 && channels != 4) || (out_depth != 8 && out_depth != 16) ||
      rowbytes != (size_t)w * (size_t)channels * (size_t)(out_depth / 8)) {
    fr_errf(err, FR_E_UNSUPPORTED, "%s: unsupported PNG layout (colour type %d, %d bits)", st->path, color,
            depth);
    return FR_E_UNSUPPORTED;
  }
  /* The decoded image must fit flowrun's limit (FR_PNG_MAX_DECODED_BYTES) before anything is allocated: a
   * small file may declare 16384x16384 16-bit RGBA (4 GiB as F32, plus 2 GiB of rows to decode into). */
  double f32_bytes = (double)w * (double)h * channels * sizeof(float);
  if (f32_bytes > (double)FR_PNG_MAX_DECODED_BYTES) {
    fr_errf(
        err, FR_E_UNSUPPORTED,
        "%s: a %ux%u %d-channel %d-bit image takes %.1f GiB decoded (F32), over the limit of %.0f GiB per "
        "decoded image (FR_PNG_MAX_DECODED_BYTES)",
        st->path, (unsigned)w, (unsigned)h, channels, depth, f32_bytes / (1u << 30),
        (double)FR_PNG_MAX_DECODED_BYTES / (1u << 30));
    return FR_E_UNSUPPORTED;
  }
  /* The raw (filtered) data is (bytes per row + 1) * h for the stored depth; the file must be big
   * enough to hold it compressed. */
  double raw_size = ((double)w * file_channels * depth / 8.0 + 1.0) * (double)h;
  if (raw_size > (double)st->file_size * FR__DEFLATE_MAX_RATIO) {
    fr_errf(err, FR_E_FORMAT, "%s: declares a %ux%u image but the file is only %ld bytes (truncated?)",
            st->path, (unsigned)w, (unsigned)h, st->file_size);
    return FR_E_FORMAT;
  }

  st->raw = fr_malloc(rowbytes * h);
  st->rows = fr_malloc(sizeof *st->rows * h);
  st->out = fr_tensor_f32(3, (int64_t[]){(int64_t)h, (int64_t)w, channels});
  if (!st->raw || !st->rows || !st->out) {
    fr_errf(err, FR_E_NOMEM, "%s: out of memory for a %ux%u image", st->path, (unsigned)w, (unsigned)h);
    return FR_E_NOMEM;
  }
  for (png_uint_32 y = 0; y < h; y++)
    st->rows[y] = st->raw + (size_t)y * rowbytes;
  png_read_image(st->png, st->rows);
  png_read_end(st->png, NULL);

  float *dst = st->out->data;
  size_t n = (size_t)w * h * (size_t)channels;
  if (out_depth == 8) {
    for (size_t i = 0; i < n; i++)
      dst[i] = (float)st->raw[i] * (1.0f / 255.0f);
  } else {
    for (size_t i = 0; i < n; i++) /* PNG stores 16-bit samples big-endian */
      dst[i] = (float)((st->raw[2 * i] << 8) | st->raw[2 * i + 1]) * (1.0f / 65535.0f);
  }
  return 0;
}

/* Opens the file, sets up libpng, runs one reading body (which returns 1 when libpng longjmp'd out of it,
 * else a status) and cleans up; the body's results stay in st. */
static enum fr_status fr__png_run(struct fr__png_state *st, int (*body)(struct fr__png_state *, struct fr_err *),
                                  struct fr_err *err) {
  enum fr_status rc = fr__png_open(st, err);
  if (rc == FR_OK)
    rc = fr__png_create_read(st, err);
  if (rc == FR_OK) {
    int r = body(st, err);
    rc = r == 1 ? fr__png_read_failed(st, err) : (enum fr_status)r;
  }
  fr__png_cleanup(st);
  return rc;
}

enum fr_status fr_png_read(const char *path, struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  struct fr__png_state st = {.path = path};
  enum fr_status rc = fr__png_run(&st, fr__png_read_body, err);
  if (rc != FR_OK) {
    fr_tensor_free(st.out);
    return rc;
  }
  *out = st.out;
  return FR_OK;
}

/* ---- text chunks ----
 * Read by walking the file's chunks here rather than through libpng: libpng keeps at most 1000 ancillary
 * chunks and drops a compressed text that inflates past 8 MB, so a workflow after 1000 other text chunks
 * or in a large zTXt was "not found". The walk reads only chunk headers and the keywords of text chunks,
 * skips everything else (image data included) with a seek, and inflates only the chunk asked for, up to
 * FR_PNG_MAX_TEXT_BYTES. A text chunk whose CRC does not match is skipped, as libpng does. */

static uint32_t fr__be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Inflates the zlib stream src[0..n) into a new NUL-terminated string. */
static enum fr_status fr__inflate_text(struct fr__png_state *st, const unsigned char *src, size_t n,
                                       char **out, struct fr_err *err) {
  *out = NULL;
  size_t cap = n * 4 + 256 < FR_PNG_MAX_TEXT_BYTES ? n * 4 + 256 : FR_PNG_MAX_TEXT_BYTES;
  char *buf = fr_malloc(cap + 1);
  if (!buf)
    return fr_errf(err, FR_E_NOMEM, "%s: out of memory reading text chunk '%s'", st->path, st->key);
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit(&z) != Z_OK) {
    fr_free(buf);
    return fr_errf(err, FR_E_NOMEM, "%s: out of memory reading text chunk '%s'", st->path, st->key);
  }
  z.next_in = (Bytef *)src;
  z.avail_in = (uInt)n;
  size_t len = 0;
  enum fr_status rc = FR_OK;
  for (;;) {
    if (len == cap) {
      if (cap >= FR_PNG_MAX_TEXT_BYTES) {
        rc = fr_errf(err, FR_E_UNSUPPORTED,
                     "%s: text chunk '%s' inflates past %d MiB, the limit for an embedded text "
                     "(FR_PNG_MAX_TEXT_BYTES)",
                     st->path, st->key, FR_PNG_MAX_TEXT_BYTES >> 20);
        break;
      }
      size_t ncap = cap * 2 < FR_PNG_MAX_TEXT_BYTES ? cap * 2 : FR_PNG_MAX_TEXT_BYTES;
      char *nb = fr_realloc(buf, ncap + 1);
      if (!nb) {
        rc = fr_errf(err, FR_E_NOMEM, "%s: out of memory reading text chunk '%s'", st->path, st->key);
        break;
      }
      buf = nb;
      cap = ncap;
    }
    z.next_out = (Bytef *)buf + len;
    z.avail_out = (uInt)(cap - len);
    int zr = inflate(&z, Z_NO_FLUSH);
    len = cap - z.avail_out;
    if (zr == Z_STREAM_END)
      break;
    if (zr == Z_OK && z.avail_out == 0)
      continue;
    if (zr == Z_MEM_ERROR) {
      rc = fr_errf(err, FR_E_NOMEM, "%s: out of memory reading text chunk '%s'", st->path, st->key);
      break;
    }
    rc =
        fr_errf(err, FR_E_FORMAT, "%s: invalid PNG: text chunk '%s' holds bad compressed data (%s)", st->path,
                st->key, z.msg ? z.msg : (zr == Z_OK || zr == Z_BUF_ERROR ? "ends early" : "inflate error"));
    break;
  }
  inflateEnd(&z);
  if (rc != FR_OK) {
    fr_free(buf);
    return rc;
  }
  buf[len] = 0;
  *out = buf;
  return FR_OK;
}

/* The value of a text chunk's data d[0..n) whose keyword (d up to its NUL at kl) matched: tEXt is the
 * rest as it is; zTXt a method byte (0: zlib) and compressed text; iTXt a compression flag, a method, a
 * language tag and a translated keyword (NUL-terminated), then the text, compressed when the flag is 1.
 * FR_E_NOTFOUND when the chunk is malformed (skipped, as libpng would). */
static enum fr_status fr__text_value(struct fr__png_state *st, uint32_t type, const unsigned char *d,
                                     size_t n, size_t kl, struct fr_err *err) {
  const unsigned char *p = d + kl + 1, *end = d + n;
  bool compressed = false;
  if (type == 0x7a545874u) { /* zTXt */
    if (p >= end || *p != 0)
      return FR_E_NOTFOUND;
    p++;
    compressed = true;
  } else if (type == 0x69545874u) { /* iTXt */
    if (end - p < 2 || p[0] > 1 || (p[0] == 1 && p[1] != 0))
      return FR_E_NOTFOUND;
    compressed = p[0] == 1;
    p += 2;
    for (int k = 0; k < 2; k++) { /* language tag, translated keyword */
      const unsigned char *z = memchr(p, 0, (size_t)(end - p));
      if (!z)
        return FR_E_NOTFOUND;
      p = z + 1;
    }
  }
  if (compressed)
    return fr__inflate_text(st, p, (size_t)(end - p), &st->text, err);
  st->text = fr_strndup((const char *)p, (size_t)(end - p));
  if (!st->text)
    return fr_errf(err, FR_E_NOMEM, "%s: out of memory reading text chunk '%s'", st->path, st->key);
  return FR_OK;
}

/* Walks the chunks of st->f (positioned after the signature) to the first valid text chunk named st->key;
 * its value goes to st->text. FR_OK with st->text NULL: there is none. */
static enum fr_status fr__find_text(struct fr__png_state *st, struct fr_err *err) {
  size_t klen = strlen(st->key);
  unsigned char *data = NULL;
  enum fr_status rc = FR_OK;
  for (long index = 0;; index++) {
    unsigned char hdr[8];
    if (fread(hdr, 1, 8, st->f) != 8) {
      rc = fr_errf(err, FR_E_FORMAT, "%s: invalid PNG: file ends early (truncated)", st->path);
      break;
    }
    uint32_t len = fr__be32(hdr), type = fr__be32(hdr + 4);
    if (len > 0x7fffffffu) {
      rc = fr_errf(err, FR_E_FORMAT, "%s: invalid PNG: chunk %ld has length %u", st->path, index,
                   (unsigned)len);
      break;
    }
    if (index == 0 && type != 0x49484452u) { /* IHDR */
      rc = fr_errf(err, FR_E_FORMAT, "%s: invalid PNG: the first chunk is not IHDR", st->path);
      break;
    }
    if (type == 0x49454e44u) /* IEND */
      break;
    bool text = type == 0x74455874u || type == 0x7a545874u || type == 0x69545874u;
    /* Only a text chunk with our keyword (the key, a NUL) is read whole. */
    if (text && len > klen) {
      unsigned char kw[80];
      if (fread(kw, 1, klen + 1, st->f) != klen + 1) {
        rc = fr_errf(err, FR_E_FORMAT, "%s: invalid PNG: file ends early (truncated)", st->path);
        break;
      }
      if (memcmp(kw, st->key, klen) == 0 && kw[klen] == 0) {
        if (len > FR_PNG_MAX_TEXT_BYTES) {
          rc = fr_errf(err, FR_E_UNSUPPORTED,
                       "%s: text chunk '%s' is %u bytes, over %d MiB, the limit for an embedded text "
                       "(FR_PNG_MAX_TEXT_BYTES)",
                       st->path, st->key, (unsigned)len, FR_PNG_MAX_TEXT_BYTES >> 20);
          break;
        }
        data = fr_malloc((size_t)len + 8);
        if (!data) {
          rc = fr_errf(err, FR_E_NOMEM, "%s: out of memory reading text chunk '%s'", st->path, st->key);
          break;
        }
        /* type, data, CRC: the CRC covers the type and the data */
        memcpy(data, hdr + 4, 4);
        memcpy(data + 4, kw, klen + 1);
        size_t rest = (size_t)len - (klen + 1) + 4;
        if (fread(data + 4 + klen + 1, 1, rest, st->f) != rest) {
          rc = fr_errf(err, FR_E_FORMAT, "%s: invalid PNG: file ends early (truncated)", st->path);
          break;
        }
        uLong crc = crc32(0L, data, (uInt)len + 4);
        if (crc == fr__be32(data + 4 + len)) {
          rc = fr__text_value(st, type, data + 4, len, klen, err);
          if (rc != FR_E_NOTFOUND)
            break;
          rc = FR_OK;
        }
        fr_free(data);
        data = NULL;
        continue;
      }
      if (fseek(st->f, (long)len - (long)(klen + 1) + 4, SEEK_CUR) != 0) {
        rc = fr_errf(err, FR_E_FORMAT, "%s: invalid PNG: file ends early (truncated)", st->path);
        break;
      }
      continue;
    }
    if (fseek(st->f, (long)len + 4, SEEK_CUR) != 0) {
      rc = fr_errf(err, FR_E_FORMAT, "%s: invalid PNG: file ends early (truncated)", st->path);
      break;
    }
  }
  fr_free(data);
  return rc;
}

enum fr_status fr_png_read_text(const char *path, const char *key, char **out, struct fr_err *err) {
  *out = NULL;
  size_t klen = key ? strlen(key) : 0;
  if (klen < 1 || klen > 79)
    return fr_errf(err, FR_E_INVALID, "%s: PNG text key '%s' must be 1 to 79 characters", path,
                   key ? key : "");
  struct fr__png_state st = {.path = path, .key = key};
  enum fr_status rc = fr__png_open(&st, err);
  if (rc == FR_OK)
    rc = fr__find_text(&st, err);
  fr__png_cleanup(&st);
  if (rc != FR_OK) {
    fr_free(st.text);
    return rc;
  }
  if (!st.text)
    return fr_errf(err, FR_E_NOTFOUND, "%s: no text chunk '%s'", path, key);
  *out = st.text;
  return FR_OK;
}

static void fr__png_buf_write(png_structp png, png_bytep data, png_size_t n) {
  fr_buf_append(png_get_io_ptr(png), data, n);
}

static void fr__png_buf_flush(png_structp png) {
  (void)png;
}

static int fr__png_write_body(struct fr__png_state *st, struct fr_buf *out, const struct fr_tensor *img,
                              const struct fr_png_text *texts, int n_texts, png_textp ptexts) {
  if (setjmp(png_jmpbuf(st->png)))
    return 1;
  png_set_write_fn(st->png, out, fr__png_buf_write, fr__png_buf_flush);
  int h = (int)img->shape[0], w = (int)img->shape[1], c = (int)img->shape[2];
  static const int color_of[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                  PNG_COLOR_TYPE_RGB_ALPHA};
  png_set_IHDR(st->png, st->info, (png_uint_32)w, (png_uint_32)h, 8, color_of[c], PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  for (int i = 0; i < n_texts; i++) {
    ptexts[i].compression = PNG_ITXT_COMPRESSION_NONE;
    ptexts[i].key = (png_charp)texts[i].key;
    ptexts[i].text = (png_charp)texts[i].value;
    ptexts[i].itxt_length = strlen(texts[i].value);
    ptexts[i].lang = (png_charp) "";
    ptexts[i].lang_key = (png_charp) "";
  }
  if (n_texts > 0)
    png_set_text(st->png, st->info, ptexts, n_texts);
  png_write_info(st->png, st->info);
  png_write_image(st->png, st->rows);
  png_write_end(st->png, NULL);
  return 0;
}

enum fr_status fr_png_encode(const struct fr_tensor *img, const struct fr_png_text *texts, int n_texts,
                             struct fr_buf *out, const char *name, struct fr_err *err) {
  char shape[64];
  if (!img || img->dtype != FR_F32 || img->dev != FR_DEV_CPU || img->ndim != 3 || img->shape[2] < 1 ||
      img->shape[2] > 4 || img->shape[0] < 1 || img->shape[1] < 1)
    return fr_errf(err, FR_E_INVALID,
                   "%s: cannot write image of shape %s: expected F32 [H, W, C], C = 1, 3 or 4", name,
                   img ? fr_shape_str(img, shape, sizeof shape) : "(null)");
  if (img->shape[0] > FR__PNG_MAX_DIM || img->shape[1] > FR__PNG_MAX_DIM)
    return fr_errf(err, FR_E_INVALID, "%s: image %s larger than %d pixels a side", name,
                   fr_shape_str(img, shape, sizeof shape), FR__PNG_MAX_DIM);
  for (int i = 0; i < n_texts; i++) {
    size_t kl = texts[i].key ? strlen(texts[i].key) : 0;
    if (kl < 1 || kl > 79 || !texts[i].value)
      return fr_errf(err, FR_E_INVALID, "%s: PNG text key '%s' must be 1 to 79 characters with a value", name,
                     texts[i].key ? texts[i].key : "(null)");
  }

  size_t h = (size_t)img->shape[0], w = (size_t)img->shape[1], c = (size_t)img->shape[2];
  struct fr__png_state st = {.path = name, .writing = 1};
  enum fr_status rc = FR_OK;
  png_textp ptexts = NULL;
  st.raw = fr_malloc(h * w * c);
  st.rows = fr_malloc(sizeof *st.rows * h);
  if (n_texts > 0)
    ptexts = fr_calloc((size_t)n_texts, sizeof *ptexts);
  if (!st.raw || !st.rows || (n_texts > 0 && !ptexts)) {
    rc = fr_errf(err, FR_E_NOMEM, "%s: out of memory writing PNG", name);
    goto done;
  }
  const float *src = img->data;
  for (size_t i = 0; i < h * w * c; i++) {
    float v = src[i];
    v = v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f; /* also maps NaN to 0 */
    st.raw[i] = (unsigned char)lrintf(v * 255.0f);
  }
  for (size_t y = 0; y < h; y++)
    st.rows[y] = st.raw + y * w * c;
  st.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &st, fr__png_error, fr__png_warning);
  if (st.png)
    st.info = png_create_info_struct(st.png);
  if (!st.png || !st.info) {
    rc = fr_errf(err, FR_E_NOMEM, "%s: out of memory creating the PNG writer", name);
    goto done;
  }
  if (fr__png_write_body(&st, out, img, texts, n_texts, ptexts) != 0)
    rc = fr_errf(err, FR_E_IO, "%s: writing PNG failed: %s", name, st.msg);
  else if (out->oom)
    rc = fr_errf(err, FR_E_NOMEM, "%s: out of memory writing PNG", name);
done:
  fr__png_cleanup(&st);
  fr_free(ptexts);
  return rc;
}

enum fr_status fr_png_write(const char *path, const struct fr_tensor *img, const struct fr_png_text *texts,
                            int n_texts, struct fr_err *err) {
  struct fr_buf b = {0};
  enum fr_status rc = fr_png_encode(img, texts, n_texts, &b, path, err);
  /* A temporary file beside the target, renamed over it when complete: a reader never sees half a PNG
   * and a failed write leaves any earlier file intact. */
  if (rc == FR_OK)
    rc = fr_write_file_atomic(path, b.data, b.len, err);
  fr_buf_free(&b);
  return rc;
}
