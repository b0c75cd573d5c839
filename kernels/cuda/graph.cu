/* Recorded replays: a sequence of ops captured once as a CUDA graph and launched again with one call
 * (kernels/ops.h: fr_ctx_record_begin). A sampler step is ~1000 small launches; replaying them as one
 * graph removes the host's per-launch cost and the gaps between kernels.
 *
 * Recording uses stream capture in relaxed mode on the context's one stream (relaxed, so that the pool
 * may still cudaMalloc while recording; cudaMalloc is not a stream operation and is not recorded). The
 * memory every recorded op touches is kept for the graph by the pool's arena (context.cu). A failure
 * while recording (an op's error, a synchronisation, a download) ends the capture, drops the partial
 * graph, and is reported by fr_cuda_record_end. */
#include "kernels/cuda/internal.cuh"

struct fr_cuda_graph {
  struct fr_cuda *cu;
  cudaGraphExec_t exec;
  struct fr_cuda_arena *arena;
};

enum fr_status fr_cuda_record_begin(void *bctx, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bctx;
  struct fr_cuda_arena *a;
  FR_CUDA_TRY(fr_cuda_pool_record_begin(cu, &a, err));
  cudaError_t e = cudaStreamBeginCapture(cu->stream, cudaStreamCaptureModeRelaxed);
  if (e != cudaSuccess) {
    fr_cuda_pool_record_end(cu);
    fr_cuda_pool_arena_free(cu, a);
    return fr_cuda_err(e, err, "record: cudaStreamBeginCapture");
  }
  cu->recording = a;
  return FR_OK;
}

enum fr_status fr_cuda_record_end(void *bctx, void **graph, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bctx;
  *graph = NULL;
  struct fr_cuda_arena *a = cu->recording;
  if (!a)
    return fr_errf(err, FR_E_INVALID, "record: no recording in progress");
  cudaGraph_t g = NULL;
  cudaError_t e = cudaStreamEndCapture(cu->stream, &g); /* also ends a capture an error invalidated */
  fr_cuda_pool_record_end(cu);
  cu->recording = NULL;
  enum fr_status rc =
      fr_cuda_err(e, err, "record: cudaStreamEndCapture (an op not allowed while recording?)");
  struct fr_cuda_graph *out = NULL;
  if (rc == FR_OK) {
    out = (struct fr_cuda_graph *)fr_calloc(1, sizeof *out);
    if (!out)
      rc = fr_errf(err, FR_E_NOMEM, "out of memory");
  }
  if (rc == FR_OK)
    rc = fr_cuda_err(cudaGraphInstantiate(&out->exec, g, 0), err, "record: cudaGraphInstantiate");
  if (g)
    cudaGraphDestroy(g);
  if (rc != FR_OK) {
    cudaGetLastError();
    fr_free(out);
    fr_cuda_pool_arena_free(cu, a);
    return rc;
  }
  out->cu = cu;
  out->arena = a;
  *graph = out;
  return FR_OK;
}

enum fr_status fr_cuda_graph_replay(void *bctx, void *graph, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bctx;
  struct fr_cuda_graph *g = (struct fr_cuda_graph *)graph;
  if (g->cu != cu)
    return fr_errf(err, FR_E_INVALID, "replay: the graph was recorded on another context");
  if (cu->recording)
    return fr_errf(err, FR_E_INVALID, "replay: a recording is in progress");
  return fr_cuda_err(cudaGraphLaunch(g->exec, cu->stream), err, "replay: cudaGraphLaunch");
}

void fr_cuda_graph_free(void *bctx, void *graph) {
  struct fr_cuda *cu = (struct fr_cuda *)bctx;
  struct fr_cuda_graph *g = (struct fr_cuda_graph *)graph;
  if (!g)
    return;
  /* a replay still queued reads the arena's blocks: let it finish before they can be handed out again */
  cudaStreamSynchronize(cu->stream);
  cudaGraphExecDestroy(g->exec);
  cudaGetLastError();
  fr_cuda_pool_arena_free(cu, g->arena);
  fr_free(g);
}
