/* ModelSamplingDiscrete (ComfyUI's node: what the model predicts, eps or v, and the zero-terminal-SNR
 * schedule) and the detection of v-prediction from a checkpoint, as ComfyUI's model detection does it. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/file.h"
#include "core/json.h"
#include "nodes/pipeline/pipeline.h"
#include "nodes/sampling/prediction.h"

/* SD2.x 768-v checkpoints carry no marker; ComfyUI tells them from the 512 eps ones by the spread of one
 * LayerNorm bias of the last output block (population std > 0.09 in the v models). Only for SD2-shaped
 * UNets (1024-wide text context, 4 latent channels). */
static bool fr__sd2_is_v(const struct fr_pipe_comp *m) {
  const struct fr_unet_config *uc = &m->unet->cfg;
  if (!m->ck->file || uc->context_dim != 1024 || uc->in_channels != 4)
    return false;
  const struct fr_st_entry *e =
      fr_st_find(m->ck->file, "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias");
  struct fr_tensor *v = e ? fr_st_view(e) : NULL, *f = v ? fr_tensor_to_f32(v) : NULL;
  bool is_v = false;
  if (f && fr_tensor_numel(f) > 0) {
    int64_t n = fr_tensor_numel(f);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) {
      double x = ((const float *)f->data)[i];
      s += x;
      s2 += x * x;
    }
    double mean = s / n, var = s2 / n - mean * mean;
    is_v = var > 0 && sqrt(var) > 0.09;
  }
  fr_tensor_free(f);
  fr_tensor_free(v);
  return is_v;
}

/* A diffusers folder's scheduler/scheduler_config.json: prediction_type and rescale_betas_zero_snr. */
static void fr__diffusers_sampling(const struct fr_checkpoint *ck, bool *v, bool *zsnr) {
  char path[4200];
  snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", ck->dir);
  char *text = NULL;
  size_t len = 0;
  struct fr_err err = {{0}};
  if (fr_read_file(path, 1 << 20, &text, &len, &err))
    return;
  struct fr_arena *a = fr_arena_new(0);
  struct fr_json *j = NULL;
  if (a && !fr_json_parse(a, text, len, 0, &j, &err)) {
    *v = !strcmp(fr_json_str(j, "prediction_type", "epsilon"), "v_prediction");
    *zsnr = fr_json_bool(j, "rescale_betas_zero_snr", false);
  }
  fr_arena_free(a);
  fr_free(text);
}

void fr_pipe_model_sampling(struct fr_node_ctx *nc, const struct fr_pipe_obj *o, const struct fr_pipe_comp *m,
                            int *prediction, bool *zsnr) {
  *prediction = FR_PRED_EPS;
  *zsnr = false;
  if (o && o->sampling != FR_PIPE_SAMPLING_AUTO) {
    *prediction = o->sampling == FR_PIPE_SAMPLING_V ? FR_PRED_V : FR_PRED_EPS;
    *zsnr = o->zsnr;
    return;
  }
  bool v = false, z = false;
  const char *why = NULL;
  if (m->ck->file) {
    v = fr_st_find(m->ck->file, "v_pred") != NULL; /* SDXL finetunes (NoobAI-XL v-pred ...) */
    z = fr_st_find(m->ck->file, "ztsnr") != NULL;
    why = "its v_pred key";
    if (!v && fr__sd2_is_v(m)) {
      v = true;
      why = "an SD2.x 768-v UNet";
    }
  } else if (m->ck->dir) {
    fr__diffusers_sampling(m->ck, &v, &z);
    why = "scheduler/scheduler_config.json";
  }
  if (v) {
    *prediction = FR_PRED_V;
    *zsnr = z;
    fr_node_info(nc, "MODEL %s predicts v (%s)%s", o ? o->path : m->ck->path, why,
                 z ? ", zero-terminal-SNR schedule" : "");
  }
}

/* ---- ModelSamplingDiscrete ---- */

static const char *const fr__samplings[] = {"eps", "v_prediction", NULL};

static enum fr_status fr__msd_run(struct fr_node_ctx *nc) {
  const struct fr_value *v = fr_in(nc, "model");
  if (!v || v->kind != FR_V_OBJECT || !v->obj || strcmp(v->obj->type, FR_T_MODEL) != 0)
    return fr_node_fail(nc, FR_E_INVALID, "input 'model': no MODEL connected");
  struct fr_pipe_obj *o = fr_pipe_obj_clone((const struct fr_pipe_obj *)v->obj);
  if (!o)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  o->sampling =
      !strcmp(fr_in_str(nc, "sampling"), "v_prediction") ? FR_PIPE_SAMPLING_V : FR_PIPE_SAMPLING_EPS;
  o->zsnr = fr_in_bool(nc, "zsnr");
  struct fr_value *out = fr_value_object(&o->o);
  return out ? fr_out_set(nc, 0, out) : fr_node_fail(nc, FR_E_NOMEM, "out of memory");
}

static const struct fr_input_spec fr__msd_in[] = {
    {"model", FR_T_MODEL, NULL, 0, -1, NULL, 0, "the model whose parameterisation is set"},
    {"sampling", FR_T_ENUM, "eps", 0, -1, fr__samplings, 0,
     "what the UNet predicts: eps (noise; SD1.x, SDXL) or v_prediction (SD2.x 768-v, v-pred finetunes)"},
    {"zsnr", FR_T_BOOL, "false", 0, -1, NULL, 0,
     "rescale the noise schedule to zero terminal SNR (models trained so, usually with v_prediction)"},
};
static const struct fr_output_spec fr__msd_out[] = {{"model", FR_T_MODEL, "the model, sampled that way"}};
const struct fr_node_spec fr_node_model_sampling_discrete = {
    "ModelSamplingDiscrete",
    1,
    "advanced/model",
    "Sets what a discrete-time model predicts (eps or v) and whether its schedule has zero terminal SNR, "
    "overriding what the checkpoint says.",
    fr__msd_in,
    FR_COUNT(fr__msd_in),
    fr__msd_out,
    FR_COUNT(fr__msd_out),
    0,
    fr__msd_run};
