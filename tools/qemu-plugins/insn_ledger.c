/*
 * insn_ledger: a QEMU TCG plugin (QEMU 7.2 plugin API, version 1) that counts the guest instructions a program
 * retires, and among them the SIMD multiply-accumulate instructions, for rtvla's ARM cost ledger
 * (`cargo xtask bench --arm`, xtask/src/arm_ledger.rs builds and runs it).
 *
 * Why our own plugin: QEMU's example plugins are not packaged by Debian, and the ledger needs one more class than
 * an instruction count: the vector MACs (fmla / fmls incl. half precision, fmlal, sdot / udot, smlal / umlal,
 * mla / mls, *mmla ...) that tell whether a model runs on the SIMD kernels it was quantised or converted for.
 *
 * How: each instruction is classified once, when QEMU translates its block, from the mnemonic of its disassembly
 * (qemu_plugin_insn_disas). Counting is inline (no callbacks): per translated block one "add n" to the instruction
 * total and, when the block holds k MAC instructions, one "add k" to the MAC total. Block-level counting is exact
 * unless a block is left in the middle (a fault), which user-mode runs of rtvla do not do. Counters are plain
 * globals: exact for a single-threaded guest (rtvla's model and tick benches are); inline ops are not atomic.
 * Instructions QEMU's disassembler does not know are classified from their encoding when they are one of the MACs
 * above (see MAC_ENCODINGS); the rest are counted as "undecoded", so a gap in the classification shows up as a
 * number instead of a silent zero.
 *
 * Arguments: out=FILE (required) gets one JSON object at exit: {"insns": N, "simd_mac": N, "undecoded": N};
 *            mnemonics=FILE (optional) also writes "count mnemonic" lines of every executed mnemonic (slower).
 *
 * Build: gcc -shared -fPIC -O2 -I <qemu-7.2 source>/include/qemu $(pkg-config --cflags glib-2.0) insn_ledger.c
 *        -o libinsn_ledger.so $(pkg-config --libs glib-2.0)
 */
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static uint64_t insns;
static uint64_t simd_mac;
static uint64_t undecoded;
static char *out_path;
static char *mnemonics_path;
/* mnemonic -> uint64_t counter (only with mnemonics=FILE) */
static GHashTable *per_mnemonic;

/* Multiply-accumulate mnemonics; counted when the destination is a vector register (v / z), so the scalar
 * by-element forms (fmla s0, s1, v2.s[1]) stay out of the class. */
static const char *const MAC_MNEMONICS[] = {
    "fmla",   "fmls",    "fmlal",   "fmlal2",  "fmlsl",   "fmlsl2",  "bfmlalb", "bfmlalt", "bfdot",  "bfmmla",
    "sdot",   "udot",    "usdot",   "sudot",   "smmla",   "ummla",   "usmmla",  "mla",     "mls",    "smlal",
    "smlal2", "umlal",   "umlal2",  "smlsl",   "smlsl2",  "umlsl",   "umlsl2",  "sqdmlal", "sqdmlal2",
    "sqdmlsl", "sqdmlsl2", "sqrdmlah", "sqrdmlsh", "fcmla", NULL,
};

/* The mnemonic (first word, lower case) of a disassembly line, into buf. */
static void mnemonic_of(const char *disas, char *buf, size_t len)
{
    size_t i = 0;
    while (*disas == ' ' || *disas == '\t') {
        disas++;
    }
    while (disas[i] && disas[i] != ' ' && disas[i] != '\t' && i + 1 < len) {
        buf[i] = g_ascii_tolower(disas[i]);
        i++;
    }
    buf[i] = '\0';
}

/* True when the first operand of a disassembly line is a vector register (v0.4s, z1.s ...). */
static bool vector_destination(const char *disas)
{
    const char *p = disas;
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    while (*p && *p != ' ' && *p != '\t') {
        p++;
    }
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    return (*p == 'v' || *p == 'z' || *p == 'V' || *p == 'Z') && g_ascii_isdigit(p[1]);
}

static bool is_simd_mac(const char *mnemonic, const char *disas)
{
    for (const char *const *m = MAC_MNEMONICS; *m; m++) {
        if (strcmp(mnemonic, *m) == 0) {
            return vector_destination(disas);
        }
    }
    return false;
}

/* The disassembler in Debian's QEMU 7.2 (capstone 4) prints ".byte" for the Armv8.2+ MACs that matter most here:
 * half-precision FMLA/FMLS (FEAT_FP16) and SDOT/UDOT (FEAT_DotProd), also the i8mm / bf16 / FHM ones. Those are
 * classified from their encoding instead (masks from the Arm ARM, checked against binutils' assembler). */
static const struct {
    uint32_t mask, value;
} MAC_ENCODINGS[] = {
    {0xBFE0FC00, 0x0E400C00}, /* fmla  Vd.<4h|8h>, Vn, Vm        (vector, half) */
    {0xBFE0FC00, 0x0EC00C00}, /* fmls  Vd.<4h|8h>, Vn, Vm */
    {0xBFC0F400, 0x0F001000}, /* fmla  Vd.<4h|8h>, Vn, Vm.h[i]   (by element, half) */
    {0xBFC0F400, 0x0F005000}, /* fmls  Vd.<4h|8h>, Vn, Vm.h[i] */
    {0xBFE0FC00, 0x0E809400}, /* sdot  Vd.<2s|4s>, Vn.<8b|16b>, Vm */
    {0xBFE0FC00, 0x2E809400}, /* udot */
    {0xBFC0F400, 0x0F80E000}, /* sdot  by element */
    {0xBFC0F400, 0x2F80E000}, /* udot  by element */
    {0xBFE0FC00, 0x0E809C00}, /* usdot */
    {0xFFE0FC00, 0x4E80A400}, /* smmla */
    {0xFFE0FC00, 0x6E80A400}, /* ummla */
    {0xFFE0FC00, 0x4E80AC00}, /* usmmla */
    {0xFFE0FC00, 0x6E40EC00}, /* bfmmla */
    {0xBFE0FC00, 0x2E40FC00}, /* bfdot */
    {0xBFE0FC00, 0x0E20EC00}, /* fmlal */
    {0xBFE0FC00, 0x2E20CC00}, /* fmlal2 */
    {0xBFE0FC00, 0x0EA0EC00}, /* fmlsl */
    {0xBFE0FC00, 0x2EA0CC00}, /* fmlsl2 */
};

static bool is_mac_encoding(const struct qemu_plugin_insn *insn)
{
    uint32_t word;
    if (qemu_plugin_insn_size(insn) != sizeof word) {
        return false;
    }
    memcpy(&word, qemu_plugin_insn_data(insn), sizeof word); /* aarch64 instructions are little-endian */
    for (size_t i = 0; i < sizeof MAC_ENCODINGS / sizeof MAC_ENCODINGS[0]; i++) {
        if ((word & MAC_ENCODINGS[i].mask) == MAC_ENCODINGS[i].value) {
            return true;
        }
    }
    return false;
}

/* QEMU's disassemblers print these for encodings they do not know. */
static bool is_undecoded(const char *mnemonic)
{
    return mnemonic[0] == '\0' || strcmp(mnemonic, "unallocated") == 0 || strcmp(mnemonic, "unimplemented") == 0 ||
           strcmp(mnemonic, ".inst") == 0 || strcmp(mnemonic, ".word") == 0 || strcmp(mnemonic, ".byte") == 0 ||
           strcmp(mnemonic, "illegal") == 0;
}

static uint64_t *mnemonic_counter(const char *mnemonic)
{
    uint64_t *c = g_hash_table_lookup(per_mnemonic, mnemonic);
    if (!c) {
        c = g_new0(uint64_t, 1);
        g_hash_table_insert(per_mnemonic, g_strdup(mnemonic), c);
    }
    return c;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t macs = 0, unknown = 0;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        char *disas = qemu_plugin_insn_disas(insn);
        char mnemonic[32];
        mnemonic_of(disas ? disas : "", mnemonic, sizeof mnemonic);
        if (is_undecoded(mnemonic)) {
            if (is_mac_encoding(insn)) {
                macs++;
                strcpy(mnemonic, "(mac-encoding)");
            } else {
                unknown++;
            }
        } else {
            macs += is_simd_mac(mnemonic, disas ? disas : "");
        }
        if (per_mnemonic) {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, mnemonic_counter(mnemonic),
                                                       1);
        }
        g_free(disas);
    }
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insns, n);
    if (macs) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &simd_mac, macs);
    }
    if (unknown) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &undecoded, unknown);
    }
}

static gint by_count_desc(gconstpointer a, gconstpointer b, gpointer table)
{
    uint64_t ca = *(uint64_t *)g_hash_table_lookup(table, a);
    uint64_t cb = *(uint64_t *)g_hash_table_lookup(table, b);
    return ca < cb ? 1 : ca > cb ? -1 : strcmp(a, b);
}

static void write_mnemonics(void)
{
    FILE *f = fopen(mnemonics_path, "w");
    if (!f) {
        fprintf(stderr, "insn_ledger: cannot write %s\n", mnemonics_path);
        return;
    }
    /* glib 2.74 (Debian 12): a GList of the keys, sorted by count */
    GList *keys = g_list_sort_with_data(g_hash_table_get_keys(per_mnemonic), by_count_desc, per_mnemonic);
    for (GList *k = keys; k; k = k->next) {
        fprintf(f, "%" PRIu64 " %s\n", *(uint64_t *)g_hash_table_lookup(per_mnemonic, k->data), (char *)k->data);
    }
    g_list_free(keys);
    fclose(f);
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    FILE *f = fopen(out_path, "w");
    if (!f) {
        fprintf(stderr, "insn_ledger: cannot write %s\n", out_path);
        return;
    }
    fprintf(f, "{\"insns\": %" PRIu64 ", \"simd_mac\": %" PRIu64 ", \"undecoded\": %" PRIu64 "}\n", insns, simd_mac,
            undecoded);
    fclose(f);
    if (per_mnemonic) {
        write_mnemonics();
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (g_str_has_prefix(argv[i], "out=")) {
            out_path = g_strdup(argv[i] + 4);
        } else if (g_str_has_prefix(argv[i], "mnemonics=")) {
            mnemonics_path = g_strdup(argv[i] + 10);
        } else {
            fprintf(stderr, "insn_ledger: unknown argument %s (expected out=FILE [mnemonics=FILE])\n", argv[i]);
            return -1;
        }
    }
    if (!out_path) {
        fprintf(stderr, "insn_ledger: missing argument out=FILE\n");
        return -1;
    }
    if (mnemonics_path) {
        per_mnemonic = g_hash_table_new(g_str_hash, g_str_equal);
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
