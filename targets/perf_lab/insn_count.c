/* insn_count: a qemu-user TCG plugin that records, for every translation block (TB), how often it ran.
 *
 * Usage: qemu-aarch64 -plugin ./insn_count.so,out=FILE prog args...
 * At exit FILE gets one line per translated block: "vaddr exec_count n_insns word0 word1 ...", with the
 * instruction words in hex. Classifying and attributing instructions happens in Python
 * (tvmcompress.targets.perf_lab.counter), which keeps this file small and the classification testable.
 *
 * Why per TB and not per instruction: one inline "add 1" at the head of each block is the cheapest
 * instrumentation qemu offers (no helper call), and a block's instructions all run when it is entered.
 * The exception is a block left midway by a fault or signal; the models we count raise none.
 * A block retranslated (code cache flush, self-modifying code) gets a second record; Python sums records
 * with the same address and words. The counter add is not atomic, so count single-threaded guests.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu_plugin_api.h"

TVMC_PLUGIN_EXPORT int qemu_plugin_version = TVMC_PLUGIN_API_VERSION;

struct block {
    uint64_t count; /* first member: the inline add targets it */
    uint64_t vaddr;
    size_t n_insns;
    uint32_t *words;
    struct block *next;
};

static struct block *blocks;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char out_path[4096];

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    struct block *b = calloc(1, sizeof *b);
    uint32_t *words = calloc(n ? n : 1, sizeof *words);
    if (b == NULL || words == NULL) {
        fprintf(stderr, "insn_count: out of memory\n");
        abort();
    }
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->n_insns = n;
    b->words = words;
    for (size_t i = 0; i < n; i++) {
        const struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        /* A64 instructions are 4 bytes; anything else is recorded as 0 and classified "other". */
        if (qemu_plugin_insn_size(insn) == 4) memcpy(&words[i], qemu_plugin_insn_data(insn), 4);
    }
    qemu_plugin_register_vcpu_tb_exec_inline(tb, TVMC_INLINE_ADD_U64, &b->count, 1);
    pthread_mutex_lock(&lock);
    b->next = blocks;
    blocks = b;
    pthread_mutex_unlock(&lock);
}

static void write_counts(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    FILE *out = fopen(out_path, "w");
    if (out == NULL) {
        perror("insn_count: cannot open the output file");
        return;
    }
    for (struct block *b = blocks; b != NULL; b = b->next) {
        if (b->count == 0) continue;
        fprintf(out, "%llx %llu %zu", (unsigned long long)b->vaddr, (unsigned long long)b->count, b->n_insns);
        for (size_t i = 0; i < b->n_insns; i++) fprintf(out, " %08x", b->words[i]);
        fputc('\n', out);
    }
    fclose(out);
}

TVMC_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
    }
    if (out_path[0] == '\0') {
        fprintf(stderr, "insn_count: pass out=FILE\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, write_counts, NULL);
    return 0;
}
