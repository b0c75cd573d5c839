/* flowrun serve: the model-list and ComfyUI-import routes (api_models.c), kept apart from serve.c's
 * router, which calls them. Each fills a JSON answer into b and returns the HTTP status; on an error the
 * message is in err and b is left empty. docs/protocol.md describes both. */
#ifndef FR_API_MODELS_H
#define FR_API_MODELS_H

#include "core/buf.h"
#include "core/json.h"
#include "core/status.h"

/* At most this many names in one answer (the walk stops there and says "truncated": true). */
#define FR__MODELS_MAX 5000

/* GET /api/models?kind=KIND: the model files of one kind (checkpoints, loras, vae, controlnet,
 * embeddings, upscale_models) in the model folders dirs[0..n), as graphs name them:
 * {"kind": K, "models": [{"name": N, "supported": bool}, ...], "truncated": bool}. */
int fr__api_models(const char *const *dirs, int n_dirs, const char *kind, struct fr_buf *b,
                   struct fr_err *err);

/* POST /api/import/comfy {"json": TEXT, "source": NAME}: ComfyUI API-format JSON converted by
 * fr_comfy_import into {"yaml": TEXT, "notes": [...]}; 422 with the converter's message. */
int fr__api_import_comfy(const struct fr_json *req, struct fr_buf *b, struct fr_err *err);

#endif
