#include <sqlite3.h>

/* sqlite3_config is variadic, which Swift cannot call: one wrapper per use. */

/* No global allocation statistics: SQLite then takes no global mutex per
 * malloc. Only effective before SQLite initialises (returns SQLITE_MISUSE after). */
static inline int credits_sqlite3_disable_memstatus(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}
