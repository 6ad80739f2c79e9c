/* The part of qemu's TCG plugin API (plugin API version 1, qemu 7.x) that insn_count.c uses.
 *
 * Written from the ABI qemu 7.2 exports to plugins, so the lab builds without qemu's development headers
 * (Debian ships none for qemu-user). Only declarations whose layout we rely on are here; the opaque
 * structs are never dereferenced. qemu refuses a plugin whose qemu_plugin_version it does not support,
 * so a mismatch fails loudly at load time rather than miscounting.
 */
#ifndef TVMCOMPRESS_QEMU_PLUGIN_API_H
#define TVMCOMPRESS_QEMU_PLUGIN_API_H

#include <stddef.h>
#include <stdint.h>

#define TVMC_PLUGIN_EXPORT __attribute__((visibility("default")))
#define TVMC_PLUGIN_API_VERSION 1

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* opaque here: we read none of its fields */
struct qemu_plugin_tb;
struct qemu_plugin_insn;

/* enum qemu_plugin_op: the only inline operation version 1 has. */
enum { TVMC_INLINE_ADD_U64 = 0 };

typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, int op, void *ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);

#endif
