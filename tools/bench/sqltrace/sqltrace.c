/*
 * sqltrace.so: an LD_PRELOAD shim that counts, per SQL statement text, what
 * a process asks of SQLite, with no change to the process:
 *   - executions (a step on a statement that was not running), steps,
 *     SQLite VM steps (sqlite3_stmt_status SQLITE_STMTSTATUS_VM_STEP),
 *   - thread CPU time spent inside sqlite3_step / sqlite3_exec,
 *   - rows written, per table and kind (INSERT / UPDATE / DELETE), from the
 *     pre-update hook (installed on each connection at its first write;
 *     libsqlite3 is built with SQLITE_ENABLE_PREUPDATE_HOOK on Debian),
 *   - for each statement that writes: the B-trees its program writes, read
 *     from EXPLAIN at first sight (OpenWrite cursors mapped to sqlite_schema
 *     names, and the Insert / IdxInsert / Delete / IdxDelete opcodes on each).
 * It sees calls the program makes through the dynamic symbol table
 * (sqlite3_step, sqlite3_exec); statements run inside libsqlite3 itself are
 * seen as the sqlite3_exec that ran them.
 *
 *   SQLTRACE_OUT=FILE LD_PRELOAD=.../sqltrace.so program …
 * At exit (exit(), a return from main), or when SQLTRACE_OUT's content is
 * asked for by SIGUSR2 (written from the next sqlite3_step call, never from
 * the signal handler), FILE receives one JSON object per line:
 *   {"sql":…,"exec":N,"steps":N,"vm_steps":N,"cpu_ns":N,"readonly":0|1,
 *    "rows":{"table:INSERT":N,…},"program":{"btree":"Insert×1 IdxDelete×1",…}}
 * tools/bench/btree-ops turns it into a per-spend table.
 * Build: cc -O2 -shared -fPIC -o sqltrace.so sqltrace.c -ldl -lpthread
 */
#define _GNU_SOURCE
#define SQLITE_ENABLE_PREUPDATE_HOOK 1 /* declares sqlite3_preupdate_hook (Debian builds it in) */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_STMTS 1024     /* distinct statement texts tracked; later ones are pooled as "(other)" */
#define MAX_ROWKINDS 16    /* table × kind pairs per statement */
#define MAX_PROGRAM 24     /* B-trees per statement program */
#define MAX_DBS 64         /* connections given the pre-update hook */

typedef struct {
    char name[96];
    int op;  /* SQLITE_INSERT / SQLITE_UPDATE / SQLITE_DELETE */
    long long n;
} RowKind;

typedef struct {
    char btree[96];
    int inserts, idx_inserts, deletes, idx_deletes;
} ProgramWrite;

typedef struct {
    char *sql;
    long long exec, steps, vm_steps, cpu_ns;
    int readonly;
    int explained;
    int nrow;
    RowKind rows[MAX_ROWKINDS];
    int nprog;
    ProgramWrite prog[MAX_PROGRAM];
} Entry;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static Entry entries[MAX_STMTS + 1];  /* the last one is "(other)" */
static int nentries;
static sqlite3 *hooked[MAX_DBS];
static int nhooked;
static __thread Entry *current;  /* the statement this thread is stepping (for the pre-update hook) */
static volatile sig_atomic_t dump_asked;

static int (*real_step)(sqlite3_stmt *);
static int (*real_exec)(sqlite3 *, const char *, int (*)(void *, int, char **, char **), void *, char **);
static int (*real_prepare)(sqlite3 *, const char *, int, sqlite3_stmt **, const char **);
static int (*real_finalize)(sqlite3_stmt *);

static void resolve(void) {
    if (real_step) return;
    real_exec = (int (*)(sqlite3 *, const char *, int (*)(void *, int, char **, char **), void *, char **))dlsym(
        RTLD_NEXT, "sqlite3_exec");
    real_prepare = (int (*)(sqlite3 *, const char *, int, sqlite3_stmt **, const char **))dlsym(RTLD_NEXT,
                                                                                             "sqlite3_prepare_v2");
    real_finalize = (int (*)(sqlite3_stmt *))dlsym(RTLD_NEXT, "sqlite3_finalize");
    real_step = (int (*)(sqlite3_stmt *))dlsym(RTLD_NEXT, "sqlite3_step");
    if (!real_step || !real_exec || !real_prepare || !real_finalize) {
        fprintf(stderr, "sqltrace: libsqlite3 symbols not found\n");
        abort();
    }
}

static long long thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The entry of a statement text (mu held). */
static Entry *entry_for(const char *sql) {
    if (!sql) sql = "(null)";
    for (int i = 0; i < nentries; i++)
        if (strcmp(entries[i].sql, sql) == 0) return &entries[i];
    if (nentries == MAX_STMTS) {
        Entry *other = &entries[MAX_STMTS];
        if (!other->sql) other->sql = strdup("(other)");
        return other;
    }
    Entry *e = &entries[nentries++];
    e->sql = strdup(sql);
    return e;
}

static void preupdate(void *ctx, sqlite3 *db, int op, const char *zdb, const char *table, sqlite3_int64 k1,
                      sqlite3_int64 k2) {
    (void)ctx; (void)db; (void)zdb; (void)k1; (void)k2;
    pthread_mutex_lock(&mu);
    Entry *e = current ? current : entry_for("(outside sqlite3_step/sqlite3_exec)");
    int i;
    for (i = 0; i < e->nrow; i++)
        if (e->rows[i].op == op && strcmp(e->rows[i].name, table) == 0) break;
    if (i == e->nrow && e->nrow < MAX_ROWKINDS) {
        snprintf(e->rows[i].name, sizeof e->rows[i].name, "%s", table);
        e->rows[i].op = op;
        e->nrow++;
    }
    if (i < e->nrow) e->rows[i].n++;
    pthread_mutex_unlock(&mu);
}

static void hook_db(sqlite3 *db) {
    for (int i = 0; i < nhooked; i++)
        if (hooked[i] == db) return;
    if (nhooked == MAX_DBS) return;
    hooked[nhooked++] = db;
    sqlite3_preupdate_hook(db, preupdate, NULL);
}

/* The B-tree name of a root page, from sqlite_schema (real calls only; mu held). */
static void btree_name(sqlite3 *db, int root, char *out, size_t n) {
    sqlite3_stmt *s = NULL;
    snprintf(out, n, "root %d", root);
    if (real_prepare(db, "SELECT name FROM sqlite_schema WHERE rootpage = ?1", -1, &s, NULL) != SQLITE_OK) return;
    sqlite3_bind_int(s, 1, root);
    if (real_step(s) == SQLITE_ROW) snprintf(out, n, "%s", (const char *)sqlite3_column_text(s, 0));
    real_finalize(s);
}

/* Reads EXPLAIN of a writing statement: which B-trees it writes, with which opcodes (mu held). */
static void explain(sqlite3 *db, Entry *e) {
    e->explained = 1;
    size_t len = strlen(e->sql) + 16;
    char *q = malloc(len);
    if (!q) return;
    snprintf(q, len, "EXPLAIN %s", e->sql);
    sqlite3_stmt *s = NULL;
    int cursor_root[256];
    for (int i = 0; i < 256; i++) cursor_root[i] = -1;
    if (real_prepare(db, q, -1, &s, NULL) != SQLITE_OK) { free(q); return; }
    free(q);
    struct { int cursor; char op[16]; } writes[256];
    int nw = 0;
    while (real_step(s) == SQLITE_ROW) {
        const char *op = (const char *)sqlite3_column_text(s, 1);
        int p1 = sqlite3_column_int(s, 2), p2 = sqlite3_column_int(s, 3);
        if (!op) continue;
        if (strcmp(op, "OpenWrite") == 0 && p1 >= 0 && p1 < 256) cursor_root[p1] = p2;
        if ((strcmp(op, "Insert") == 0 || strcmp(op, "IdxInsert") == 0 || strcmp(op, "Delete") == 0 ||
             strcmp(op, "IdxDelete") == 0) && nw < 256) {
            writes[nw].cursor = p1;
            snprintf(writes[nw].op, sizeof writes[nw].op, "%s", op);
            nw++;
        }
    }
    real_finalize(s);
    for (int w = 0; w < nw; w++) {
        int c = writes[w].cursor, root = (c >= 0 && c < 256) ? cursor_root[c] : -1;
        char name[96];
        if (root < 0) snprintf(name, sizeof name, "ephemeral cursor %d", c);
        else btree_name(db, root, name, sizeof name);
        int i;
        for (i = 0; i < e->nprog; i++)
            if (strcmp(e->prog[i].btree, name) == 0) break;
        if (i == e->nprog) {
            if (e->nprog == MAX_PROGRAM) continue;
            memset(&e->prog[i], 0, sizeof e->prog[i]);
            snprintf(e->prog[i].btree, sizeof e->prog[i].btree, "%s", name);
            e->nprog++;
        }
        if (strcmp(writes[w].op, "Insert") == 0) e->prog[i].inserts++;
        else if (strcmp(writes[w].op, "IdxInsert") == 0) e->prog[i].idx_inserts++;
        else if (strcmp(writes[w].op, "Delete") == 0) e->prog[i].deletes++;
        else e->prog[i].idx_deletes++;
    }
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, " ");
        else fputc(c, f);
    }
    fputc('"', f);
}

static const char *op_name(int op) {
    return op == SQLITE_INSERT ? "INSERT" : op == SQLITE_UPDATE ? "UPDATE" : op == SQLITE_DELETE ? "DELETE" : "?";
}

static void dump(void) {
    const char *path = getenv("SQLTRACE_OUT");
    if (!path || !*path) return;
    FILE *f = fopen(path, "w");
    if (!f) { perror("sqltrace: SQLTRACE_OUT"); return; }
    pthread_mutex_lock(&mu);
    for (int i = 0; i <= MAX_STMTS; i++) {
        Entry *e = &entries[i];
        if (!e->sql) continue;
        fprintf(f, "{\"sql\":");
        json_string(f, e->sql);
        fprintf(f, ",\"exec\":%lld,\"steps\":%lld,\"vm_steps\":%lld,\"cpu_ns\":%lld,\"readonly\":%d,\"rows\":{",
                e->exec, e->steps, e->vm_steps, e->cpu_ns, e->readonly);
        for (int r = 0; r < e->nrow; r++) {
            char key[128];
            snprintf(key, sizeof key, "%s:%s", e->rows[r].name, op_name(e->rows[r].op));
            fprintf(f, "%s", r ? "," : "");
            json_string(f, key);
            fprintf(f, ":%lld", e->rows[r].n);
        }
        fprintf(f, "},\"program\":{");
        for (int p = 0; p < e->nprog; p++) {
            char ops[128];
            ProgramWrite *w = &e->prog[p];
            snprintf(ops, sizeof ops, "Insert×%d IdxInsert×%d Delete×%d IdxDelete×%d", w->inserts, w->idx_inserts,
                     w->deletes, w->idx_deletes);
            fprintf(f, "%s", p ? "," : "");
            json_string(f, w->btree);
            fputc(':', f);
            json_string(f, ops);
        }
        fprintf(f, "}}\n");
    }
    pthread_mutex_unlock(&mu);
    fclose(f);
}

static void on_usr2(int sig) { (void)sig; dump_asked = 1; }

__attribute__((constructor)) static void init(void) {
    resolve();
    signal(SIGUSR2, on_usr2);
    atexit(dump);
}

int sqlite3_step(sqlite3_stmt *stmt) {
    resolve();
    if (dump_asked) { dump_asked = 0; dump(); }
    sqlite3 *db = sqlite3_db_handle(stmt);
    const int fresh = !sqlite3_stmt_busy(stmt);
    pthread_mutex_lock(&mu);
    Entry *e = entry_for(sqlite3_sql(stmt));
    if (fresh) e->exec++;
    e->steps++;
    if (!sqlite3_stmt_readonly(stmt)) {
        hook_db(db);
        if (!e->explained) explain(db, e);
    } else {
        e->readonly = 1;
    }
    pthread_mutex_unlock(&mu);
    Entry *saved = current;
    current = e;
    long long t0 = thread_cpu_ns();
    int rc = real_step(stmt);
    long long t1 = thread_cpu_ns();
    current = saved;
    int vm = sqlite3_stmt_status(stmt, SQLITE_STMTSTATUS_VM_STEP, 1);
    pthread_mutex_lock(&mu);
    e->cpu_ns += t1 - t0;
    e->vm_steps += vm;
    pthread_mutex_unlock(&mu);
    return rc;
}

int sqlite3_exec(sqlite3 *db, const char *sql, int (*cb)(void *, int, char **, char **), void *arg, char **err) {
    resolve();
    pthread_mutex_lock(&mu);
    hook_db(db);
    Entry *e = entry_for(sql);
    e->exec++;
    pthread_mutex_unlock(&mu);
    Entry *saved = current;
    current = e;
    long long t0 = thread_cpu_ns();
    int rc = real_exec(db, sql, cb, arg, err);
    long long t1 = thread_cpu_ns();
    current = saved;
    pthread_mutex_lock(&mu);
    e->cpu_ns += t1 - t0;
    pthread_mutex_unlock(&mu);
    return rc;
}
