#include "ulid.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

static const char alphabet[32] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* Value + 1 of each accepted byte, so that the zero default of every other
 * byte (NUL, I, L, O, U, '-', …) means "invalid". Lower case is accepted. */
#define DIGIT(upper, lower, value) [upper] = (value) + 1, [lower] = (value) + 1
static const unsigned char digit_plus_one[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5,
    ['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
    DIGIT('A', 'a', 10), DIGIT('B', 'b', 11), DIGIT('C', 'c', 12), DIGIT('D', 'd', 13),
    DIGIT('E', 'e', 14), DIGIT('F', 'f', 15), DIGIT('G', 'g', 16), DIGIT('H', 'h', 17),
    DIGIT('J', 'j', 18), DIGIT('K', 'k', 19), DIGIT('M', 'm', 20), DIGIT('N', 'n', 21),
    DIGIT('P', 'p', 22), DIGIT('Q', 'q', 23), DIGIT('R', 'r', 24), DIGIT('S', 's', 25),
    DIGIT('T', 't', 26), DIGIT('V', 'v', 27), DIGIT('W', 'w', 28), DIGIT('X', 'x', 29),
    DIGIT('Y', 'y', 30), DIGIT('Z', 'z', 31),
};
#undef DIGIT

/* The 128-bit value is hi:lo (hi = time << 16 | rand_hi). 26 characters hold
 * 130 bits, so the first character carries only 3 bits and character 13
 * straddles the two halves: 1 bit of hi, 4 bits of lo. */
void dl_ulid_encode(const dl_ulid *u, char out[DL_ULID_LEN])
{
    uint64_t hi = (u->time_ms << 16) | u->rand_hi;
    uint64_t lo = u->rand_lo;
    for (int i = 25; i >= 14; i--) {
        out[i] = alphabet[lo & 31];
        lo >>= 5;
    }
    out[13] = alphabet[((hi & 1) << 4) | lo];
    hi >>= 1;
    for (int i = 12; i >= 0; i--) {
        out[i] = alphabet[hi & 31];
        hi >>= 5;
    }
}

dl_ulid_status dl_ulid_decode(const char *s, size_t len, dl_ulid *out, size_t *bad_pos)
{
    unsigned char d[DL_ULID_LEN];
    if (len != DL_ULID_LEN)
        return DL_ULID_ERR_LENGTH;
    for (size_t i = 0; i < DL_ULID_LEN; i++) {
        unsigned char v = digit_plus_one[(unsigned char)s[i]];
        if (v == 0) {
            if (bad_pos)
                *bad_pos = i;
            return DL_ULID_ERR_CHAR;
        }
        d[i] = (unsigned char)(v - 1);
    }
    if (d[0] > 7)
        return DL_ULID_ERR_TOO_BIG;
    uint64_t hi = 0, lo;
    for (int i = 0; i <= 12; i++)
        hi = (hi << 5) | d[i];
    hi = (hi << 1) | (d[13] >> 4);
    lo = d[13] & 15;
    for (int i = 14; i < DL_ULID_LEN; i++)
        lo = (lo << 5) | d[i];
    out->time_ms = hi >> 16;
    out->rand_hi = (uint16_t)(hi & 0xFFFF);
    out->rand_lo = lo;
    return DL_ULID_OK;
}

static bool is_printable_ascii(unsigned char c)
{
    return c > 0x20 && c < 0x7F;
}

static bool is_excluded_letter(unsigned char c)
{
    return c != '\0' && strchr("ILOUilou", c) != NULL;
}

/* Positions in messages count from 1, as Lua strings do. */
static void describe_bad_char(const char *s, size_t pos, char *buf, size_t buf_size)
{
    unsigned char c = (unsigned char)s[pos];
    if (is_excluded_letter(c))
        snprintf(buf, buf_size, "invalid character '%c' at position %zu (ULIDs use no I, L, O or U)",
                 c, pos + 1);
    else if (is_printable_ascii(c))
        snprintf(buf, buf_size, "invalid character '%c' at position %zu", c, pos + 1);
    else
        snprintf(buf, buf_size, "invalid byte 0x%02X at position %zu", (unsigned)c, pos + 1);
}

void dl_ulid_describe_decode_error(dl_ulid_status st, const char *s, size_t len, size_t bad_pos,
                                   char *buf, size_t buf_size)
{
    if (buf_size == 0)
        return;
    if (st == DL_ULID_ERR_LENGTH)
        snprintf(buf, buf_size, "a ULID has %d characters, got %zu", DL_ULID_LEN, len);
    else if (st == DL_ULID_ERR_CHAR && bad_pos < len)
        describe_bad_char(s, bad_pos, buf, buf_size);
    else if (st == DL_ULID_ERR_TOO_BIG && len > 0)
        snprintf(buf, buf_size, "ULID exceeds 128 bits: its first character must be 0-7, got '%c'",
                 s[0]);
    else
        snprintf(buf, buf_size, "%s", dl_ulid_status_message(st));
}

const char *dl_ulid_status_message(dl_ulid_status st)
{
    switch (st) {
    case DL_ULID_OK:
        return "ok";
    case DL_ULID_ERR_LENGTH:
        return "a ULID has 26 characters";
    case DL_ULID_ERR_CHAR:
        return "invalid character in ULID";
    case DL_ULID_ERR_TOO_BIG:
        return "ULID exceeds 128 bits";
    case DL_ULID_ERR_OVERFLOW:
        return "the random part is all ones: no greater ULID exists in this millisecond";
    case DL_ULID_ERR_TIME:
        return "ULID time must be an integer in 0 .. 2^48-1";
    case DL_ULID_ERR_CLOCK:
        return "system clock unreadable or outside the ULID time range";
    case DL_ULID_ERR_RANDOM:
        return "OpenSSL RAND_bytes failed";
    case DL_ULID_ERR_FORK_SETUP:
        return "could not register the ULID fork handlers (pthread_atfork)";
    }
    return "unknown ULID error";
}

void dl_ulid_to_bytes(const dl_ulid *u, unsigned char out[DL_ULID_BYTES])
{
    for (int i = 0; i < 6; i++)
        out[i] = (unsigned char)(u->time_ms >> (40 - 8 * i));
    out[6] = (unsigned char)(u->rand_hi >> 8);
    out[7] = (unsigned char)u->rand_hi;
    for (int i = 0; i < 8; i++)
        out[8 + i] = (unsigned char)(u->rand_lo >> (56 - 8 * i));
}

dl_ulid_status dl_ulid_from_parts(uint64_t time_ms, const unsigned char random[DL_ULID_RANDOM_BYTES],
                                  dl_ulid *out)
{
    if (time_ms > DL_ULID_TIME_MAX)
        return DL_ULID_ERR_TIME;
    uint64_t lo = 0;
    for (int i = 2; i < DL_ULID_RANDOM_BYTES; i++)
        lo = (lo << 8) | random[i];
    out->time_ms = time_ms;
    out->rand_hi = (uint16_t)((random[0] << 8) | random[1]);
    out->rand_lo = lo;
    return DL_ULID_OK;
}

dl_ulid_status dl_ulid_increment(dl_ulid *u)
{
    if (u->rand_lo != UINT64_MAX) {
        u->rand_lo++;
        return DL_ULID_OK;
    }
    if (u->rand_hi == UINT16_MAX)
        return DL_ULID_ERR_OVERFLOW;
    u->rand_lo = 0;
    u->rand_hi++;
    return DL_ULID_OK;
}

dl_ulid_status dl_ulid_now_ms(uint64_t *out)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return DL_ULID_ERR_CLOCK;
    if (ts.tv_sec < 0 || (uint64_t)ts.tv_sec > DL_ULID_TIME_MAX / 1000)
        return DL_ULID_ERR_CLOCK;
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    if (ms > DL_ULID_TIME_MAX)
        return DL_ULID_ERR_CLOCK;
    *out = ms;
    return DL_ULID_OK;
}

/* ---- Process-wide state ------------------------------------------------
 *
 * Deliberately shared by every Lua state and every thread of the process
 * (several lua_States, nginx's worker-thread pool): ULIDs from one process
 * must be strictly increasing no matter which state made them, which one
 * sequence behind one mutex guarantees. The randomness pool lives under
 * the same mutex so that refilling it costs one RAND_bytes call per
 * POOL_SIZE / 10 fresh milliseconds instead of one per ULID.
 *
 * fork() copies all of this into the child (nginx forks its workers from a
 * master that may already have made ULIDs), which would then repeat the
 * parent's next ULIDs. The atfork handlers make the child discard the pool
 * and the last ULID, and keep the mutex consistent across fork (a mutex held
 * by another thread at fork time would stay locked forever in the child).
 * This is why no getpid() check is needed on the hot path. glibc unregisters
 * the handlers when the module is dlclose'd, so they never dangle. */

#define POOL_SIZE (32 * DL_ULID_RANDOM_BYTES)

static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static dl_ulid_gen shared_gen;
static unsigned char pool[POOL_SIZE];
static size_t pool_next = POOL_SIZE; /* offset of the first unused byte */

/* Bumped in each forked child so that caller-owned generators forget their
 * last ULID too. Only the child handler writes it, while the child has a
 * single thread, so readers need no lock. */
static unsigned fork_epoch;

static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;
static bool fork_handlers_failed;

static void before_fork(void)
{
    pthread_mutex_lock(&shared_lock);
}

static void after_fork_in_parent(void)
{
    pthread_mutex_unlock(&shared_lock);
}

static void after_fork_in_child(void)
{
    memset(pool, 0, sizeof pool);
    pool_next = POOL_SIZE;
    shared_gen.has_last = false;
    fork_epoch++;
    pthread_mutex_unlock(&shared_lock);
}

static void register_fork_handlers(void)
{
    fork_handlers_failed =
        pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child) != 0;
}

/* Without the handlers a forked child could repeat ULIDs, so generation
 * refuses to run rather than risk it. */
static dl_ulid_status ensure_fork_handlers(void)
{
    pthread_once(&fork_handlers_once, register_fork_handlers);
    return fork_handlers_failed ? DL_ULID_ERR_FORK_SETUP : DL_ULID_OK;
}

static dl_ulid_status draw_from_pool_locked(unsigned char out[DL_ULID_RANDOM_BYTES])
{
    if (pool_next > POOL_SIZE - DL_ULID_RANDOM_BYTES) {
        if (RAND_bytes(pool, POOL_SIZE) != 1)
            return DL_ULID_ERR_RANDOM;
        pool_next = 0;
    }
    memcpy(out, pool + pool_next, DL_ULID_RANDOM_BYTES);
    pool_next += DL_ULID_RANDOM_BYTES;
    return DL_ULID_OK;
}

dl_ulid_status dl_ulid_random(unsigned char out[DL_ULID_RANDOM_BYTES])
{
    dl_ulid_status st = ensure_fork_handlers();
    if (st != DL_ULID_OK)
        return st;
    pthread_mutex_lock(&shared_lock);
    st = draw_from_pool_locked(out);
    pthread_mutex_unlock(&shared_lock);
    return st;
}

/* ---- Generators --------------------------------------------------------- */

typedef dl_ulid_status (*random_source)(unsigned char out[DL_ULID_RANDOM_BYTES]);

static void remember_last(dl_ulid_gen *g, const dl_ulid *last)
{
    g->last = *last;
    g->has_last = true;
    g->fork_epoch = fork_epoch;
}

/* Registering here too means a fork between creating a generator and its
 * first dl_ulid_gen_next() already bumps the epoch. A failure is reported by
 * dl_ulid_gen_next(). */
void dl_ulid_gen_init(dl_ulid_gen *g)
{
    (void)ensure_fork_handlers();
    memset(g, 0, sizeof *g);
}

void dl_ulid_gen_seed(dl_ulid_gen *g, const dl_ulid *last)
{
    (void)ensure_fork_handlers();
    remember_last(g, last);
}

/* A clock that went back must not produce a smaller ULID, so any time not
 * after the last one continues the last one's millisecond. */
static bool continues_last(const dl_ulid_gen *g, uint64_t time_ms)
{
    return g->has_last && g->fork_epoch == fork_epoch && time_ms <= g->last.time_ms;
}

static dl_ulid_status fresh_ulid(uint64_t time_ms, const unsigned char *fresh, random_source draw,
                                 dl_ulid *out)
{
    unsigned char drawn[DL_ULID_RANDOM_BYTES];
    if (!fresh) {
        dl_ulid_status st = draw(drawn);
        if (st != DL_ULID_OK)
            return st;
        fresh = drawn;
    }
    return dl_ulid_from_parts(time_ms, fresh, out);
}

static dl_ulid_status gen_step(dl_ulid_gen *g, uint64_t time_ms, const unsigned char *fresh,
                               random_source draw, dl_ulid *out)
{
    dl_ulid next;
    dl_ulid_status st;
    if (time_ms > DL_ULID_TIME_MAX)
        return DL_ULID_ERR_TIME;
    if (continues_last(g, time_ms)) {
        next = g->last;
        st = dl_ulid_increment(&next);
    } else {
        st = fresh_ulid(time_ms, fresh, draw, &next);
    }
    if (st != DL_ULID_OK)
        return st;
    remember_last(g, &next);
    *out = next;
    return DL_ULID_OK;
}

dl_ulid_status dl_ulid_gen_next(dl_ulid_gen *g, uint64_t time_ms, const unsigned char *fresh,
                                dl_ulid *out)
{
    /* Checked even when the caller supplies all randomness: the fork epoch
     * this generator relies on needs the handlers. */
    dl_ulid_status st = ensure_fork_handlers();
    if (st != DL_ULID_OK)
        return st;
    return gen_step(g, time_ms, fresh, dl_ulid_random, out);
}

dl_ulid_status dl_ulid_next_default(dl_ulid *out)
{
    uint64_t now;
    dl_ulid_status st = ensure_fork_handlers();
    if (st == DL_ULID_OK)
        st = dl_ulid_now_ms(&now);
    if (st != DL_ULID_OK)
        return st;
    pthread_mutex_lock(&shared_lock);
    st = gen_step(&shared_gen, now, NULL, draw_from_pool_locked, out);
    pthread_mutex_unlock(&shared_lock);
    return st;
}
