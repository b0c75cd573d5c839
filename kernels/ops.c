#include "kernels/ops.h"  /* dispatch to backends: lands with the CPU backend */
