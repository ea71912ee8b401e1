/* The linear Gaussian model as a compiled external simulator: x = theta + 0.1 * eps.
 *
 * Build:  cc -O2 -o linear_gaussian linear_gaussian.c -lm
 * Run:    linear_gaussian INPUT OUTPUT SEED
 *
 * Reads CSV rows of parameters from INPUT and writes one CSV row of summaries per row to
 * OUTPUT, in the same order (the file protocol of sbi_rounds.simulation). The noise comes
 * from a splitmix64 generator seeded by SEED (Box-Muller for normal draws). Exit status 0 on
 * success, 1 on bad usage or unreadable input, 2 on unwritable output.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t state;

static uint64_t splitmix64(void) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double uniform(void) { /* in (0, 1) */
    return ((double)(splitmix64() >> 11) + 0.5) / 9007199254740992.0;
}

static double normal(void) {
    return sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform());
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s INPUT OUTPUT SEED\n", argv[0]);
        return 1;
    }
    state = strtoull(argv[3], NULL, 10);
    FILE *in = fopen(argv[1], "r");
    if (!in) { perror(argv[1]); return 1; }
    FILE *out = fopen(argv[2], "w");
    if (!out) { perror(argv[2]); fclose(in); return 2; }
    char line[65536];
    while (fgets(line, sizeof line, in)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char *p = line, *end;
        int first = 1;
        for (;;) {
            double theta = strtod(p, &end);
            if (end == p) break;
            fprintf(out, first ? "%.17g" : ",%.17g", theta + 0.1 * normal());
            first = 0;
            p = end;
            while (*p == ',' || *p == ' ') p++;
        }
        if (first) { fprintf(stderr, "no numbers in line: %s", line); return 1; }
        fputc('\n', out);
    }
    fclose(in);
    return fclose(out) == 0 ? 0 : 2;
}
