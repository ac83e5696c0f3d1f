/* Signals and the process, for long-running loops in plain Lua (the stream
 * consumer's run()): catch SIGINT and SIGTERM so the loop can stop cleanly,
 * hand its leases back, and exit.
 *
 * Signal dispositions belong to the process, not to a Lua state, so the
 * flag and the saved handlers are process-wide by nature. Only the loop that
 * asked for them (at most one at a time) reads them; nginx never calls these
 * functions, it has its own signal handling. */
#include "dynlog.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t caught_signal = 0;
static struct sigaction saved_int, saved_term;
static int catching = 0;

static void on_signal(int sig)
{
    caught_signal = sig;
}

/* signal_catch() -> true: from now on SIGINT and SIGTERM set a flag instead
 * of killing the process. */
static int l_signal_catch(lua_State *L)
{
    if (!catching) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGINT, &sa, &saved_int) != 0 || sigaction(SIGTERM, &sa, &saved_term) != 0)
            return luaL_error(L, "dynlog.core: could not install signal handlers");
        catching = 1;
    }
    caught_signal = 0;
    lua_pushboolean(L, 1);
    return 1;
}

/* signal_caught() -> "INT", "TERM" or nil */
static int l_signal_caught(lua_State *L)
{
    int sig = caught_signal;
    if (sig == SIGINT)
        lua_pushliteral(L, "INT");
    else if (sig == SIGTERM)
        lua_pushliteral(L, "TERM");
    else
        lua_pushnil(L);
    return 1;
}

/* signal_restore(): the handlers that were there before signal_catch. */
static int l_signal_restore(lua_State *L)
{
    (void)L;
    if (catching) {
        sigaction(SIGINT, &saved_int, NULL);
        sigaction(SIGTERM, &saved_term, NULL);
        catching = 0;
    }
    return 0;
}

static int l_getpid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

void dl_open_signal(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "signal_catch", l_signal_catch },
        { "signal_caught", l_signal_caught },
        { "signal_restore", l_signal_restore },
        { "getpid", l_getpid },
        { NULL, NULL },
    };
    luaL_setfuncs(L, funcs, 0);
}
