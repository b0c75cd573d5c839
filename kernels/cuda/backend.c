/* The CUDA backend table (kernels/backend.h) and the module's one exported symbol. The functions live in the
 * .cu files beside this one; this file is C so the table can use designated initialisers. kernels/ops.c
 * opens the module (libflowrun-cuda.so) and calls fr_cuda_module_backend to get the table. */
#include "kernels/cuda/fr_cuda.h"

static const struct fr_backend fr__backend_cuda = {
    .version = FR_BACKEND_VERSION,
    .name = "cuda",
    .dev = FR_DEV_CUDA,
    .init = fr_cuda_init,
    .free = fr_cuda_free,
    .alloc = fr_cuda_alloc,
    .weight = fr_cuda_weight,
    .upload = fr_cuda_upload,
    .download = fr_cuda_download,
    .linear = fr_cuda_linear,
    .matmul = fr_cuda_matmul,
    .conv2d = fr_cuda_conv2d,
    .attention = fr_cuda_attention,
    .group_norm = fr_cuda_group_norm,
    .layer_norm = fr_cuda_layer_norm,
    .softmax = fr_cuda_softmax,
    .unary = fr_cuda_unary,
    .geglu = fr_cuda_geglu,
    .binary = fr_cuda_binary,
    .concat = fr_cuda_concat,
    .slice = fr_cuda_slice,
    .permute = fr_cuda_permute,
    .pad2d = fr_cuda_pad2d,
    .upsample_nearest2x = fr_cuda_upsample_nearest2x,
    .embedding = fr_cuda_embedding,
    .gather_rows = fr_cuda_gather_rows,
    .timestep_embedding = fr_cuda_timestep_embedding,
    .sync = fr_cuda_sync,
    .mem_stats = fr_cuda_mem_stats,
    .record_begin = fr_cuda_record_begin,
    .record_end = fr_cuda_record_end,
    .graph_replay = fr_cuda_graph_replay,
    .graph_free = fr_cuda_graph_free,
    .reserve = fr_cuda_reserve,
};

/* The entry point kernels/ops.c looks up with dlsym (FR_CUDA_MODULE_ENTRY): the table, whose version the
 * caller checks against its own FR_BACKEND_VERSION. */
__attribute__((visibility("default"))) const struct fr_backend *fr_cuda_module_backend(void);
const struct fr_backend *fr_cuda_module_backend(void) {
  return &fr__backend_cuda;
}
