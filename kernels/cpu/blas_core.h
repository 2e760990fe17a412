/* kernels/cpu/blas_core.h — making OpenBLAS use the kernels this CPU can run.
 *
 * Debian's OpenBLAS picks its kernel set ("core") at load time from the
 * CPU's family and model. A CPU newer than the library (OpenBLAS 0.3.21
 * does not know Intel family 6 model 207, for one) gets the generic SSE3
 * "Prescott" kernels, 2-4x slower than the AVX2 or AVX-512 ones it could
 * run (docs/RESULTS.md, "OpenBLAS's kernel set"). The only way to choose is
 * the environment variable OPENBLAS_CORETYPE, read once when the library is
 * loaded, so a program that wants the fix sets it and executes itself
 * again before doing anything else. */
#ifndef LTDI_KERNELS_CPU_BLAS_CORE_H
#define LTDI_KERNELS_CPU_BLAS_CORE_H

#ifdef __cplusplus
extern "C" {
#endif

/* The core OpenBLAS chose (its own name for it, e.g. "Prescott"). */
const char *ltdi_blas_core_name(void);

/* 1 when that core has no AVX2 kernels: OpenBLAS's generic fallback or a
 * core from before Haswell (its names, any case), else 0. */
int ltdi_blas_core_is_weak(void);

/* The core to ask for instead, or NULL when OpenBLAS's choice stands: it
 * chose a core with AVX2 or better, or OPENBLAS_CORETYPE is already set
 * (by the user, or by a re-execution). Otherwise, by the CPU's flags:
 * "SkylakeX" with AVX-512 F, CD, BW, DQ and VL; "Haswell" with AVX2 and FMA;
 * NULL without them. */
const char *ltdi_blas_core_upgrade(void);

/* For a program's main, before anything else (threads, files, output): when
 * ltdi_blas_core_upgrade() names a core, sets OPENBLAS_CORETYPE to it and
 * executes /proc/self/exe again with the same argv and environment, so
 * open file descriptors and the process id stay. Returns when there is
 * nothing to do, when LTDI_BLAS_KEEP_CORE is set to a non-empty value other
 * than "0" (to measure the library's own choice), or when the execution
 * fails; the program then runs on as it would have. */
void ltdi_blas_core_reexec(char **argv);

#ifdef __cplusplus
}
#endif

#endif
