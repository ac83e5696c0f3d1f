/* CHECK(cond, fmt, ...): the harnesses' invariant check. On failure it says
 * where and what, then aborts, which libFuzzer reports as a crash and saves
 * the input for. */
#ifndef DYNLOG_FUZZ_CHECK_H
#define DYNLOG_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond, ...)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "\n==fuzz== %s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                              \
            fprintf(stderr, __VA_ARGS__);                                                \
            fputc('\n', stderr);                                                         \
            abort();                                                                     \
        }                                                                                \
    } while (0)

#endif
