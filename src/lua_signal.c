/* Signals and the process, for long-running loops in plain Lua (the stream
 * consumer's run(), the CLI's import and tail): catch SIGINT, SIGTERM, SIGHUP
 * (the terminal went away) and SIGPIPE (the reader of stdout did) so the loop
 * can stop cleanly, save its progress or hand its leases back, and exit,
 * instead of being killed in the middle of a write. A write to a closed pipe
 * then fails with EPIPE instead of killing the process.
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
static const int caught_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGPIPE };
#define N_CAUGHT (sizeof caught_signals / sizeof caught_signals[0])
static struct sigaction saved[N_CAUGHT];
static int catching = 0;

static void on_signal(int sig)
{
    caught_signal = sig;
}

static void restore_handlers(size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        sigaction(caught_signals[i], &saved[i], NULL);
}

/* signal_catch() -> true: from now on SIGINT, SIGTERM, SIGHUP and SIGPIPE
 * set a flag instead of killing the process. A SIGHUP or SIGPIPE that the
 * process ignores stays ignored: under nohup the terminal going away is no
 * reason to stop, and a process that ignores SIGPIPE (LuaSocket does) sees
 * EPIPE from the write instead. */
static int l_signal_catch(lua_State *L)
{
    if (!catching) {
        struct sigaction sa;
        size_t i;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        for (i = 0; i < N_CAUGHT; i++) {
            int sig = caught_signals[i];
            if (sigaction(sig, NULL, &saved[i]) != 0) {
                restore_handlers(i);
                return luaL_error(L, "dynlog.core: could not read signal handlers");
            }
            if ((sig == SIGHUP || sig == SIGPIPE) && saved[i].sa_handler == SIG_IGN)
                continue;
            if (sigaction(sig, &sa, NULL) != 0) {
                restore_handlers(i);
                return luaL_error(L, "dynlog.core: could not install signal handlers");
            }
        }
        catching = 1;
    }
    caught_signal = 0;
    lua_pushboolean(L, 1);
    return 1;
}

/* signal_caught() -> "INT", "TERM", "HUP", "PIPE" or nil */
static int l_signal_caught(lua_State *L)
{
    int sig = caught_signal;
    if (sig == SIGINT)
        lua_pushliteral(L, "INT");
    else if (sig == SIGTERM)
        lua_pushliteral(L, "TERM");
    else if (sig == SIGHUP)
        lua_pushliteral(L, "HUP");
    else if (sig == SIGPIPE)
        lua_pushliteral(L, "PIPE");
    else
        lua_pushnil(L);
    return 1;
}

/* signal_restore(): the handlers that were there before signal_catch. */
static int l_signal_restore(lua_State *L)
{
    (void)L;
    if (catching) {
        restore_handlers(N_CAUGHT);
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
