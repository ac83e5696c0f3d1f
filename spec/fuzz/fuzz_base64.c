/* Fuzzes base64 (src/base64.c, over OpenSSL's EVP block functions), which
 * decodes every B and BS value of DynamoDB responses.
 *
 * Beyond "no crash, no sanitizer report", each input checks:
 *  - dl_base64_decode accepts exactly what a reference check written here
 *    accepts (groups of 4 characters of the standard alphabet, at most two
 *    '=' at the very end), appending after what the buffer already holds;
 *  - on success the output has len / 4 * 3 - padding bytes, and encoding
 *    it gives the input back, except that the bits a short last group
 *    leaves unused may differ (only its last character may change);
 *  - for the input taken as bytes, decode(encode(x)) == x and the text has
 *    4 * ceil(n / 3) characters.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "base64.h"

#define PREFIX "prefix:"
#define PREFIX_LEN (sizeof PREFIX - 1)

static int in_alphabet(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* -1 when text is not padded base64, else the number of '='. */
static int reference_padding(const uint8_t *text, size_t len)
{
    if (len % 4 != 0)
        return -1;
    size_t pad = 0;
    while (pad < 2 && pad < len && text[len - 1 - pad] == '=')
        pad++;
    for (size_t i = 0; i < len - pad; i++)
        if (!in_alphabet(text[i]))
            return -1;
    return (int)pad;
}

static void check_decode(const uint8_t *data, size_t size)
{
    dl_buf out = DL_BUF_INIT, again = DL_BUF_INIT;
    CHECK(dl_buf_adds(&out, PREFIX) == 0, "no memory");
    int rc = dl_base64_decode(&out, (const char *)data, size);
    int pad = reference_padding(data, size);
    CHECK(rc == 0 || rc == -2, "decode returned %d", rc);
    CHECK((rc == 0) == (pad >= 0), "decode returned %d, reference padding %d", rc, pad);
    CHECK(out.len >= PREFIX_LEN && memcmp(out.data, PREFIX, PREFIX_LEN) == 0, "prefix overwritten");
    if (rc == 0) {
        size_t n = out.len - PREFIX_LEN;
        CHECK(n == size / 4 * 3 - (size_t)pad, "decoded %zu bytes from %zu characters, padding %d", n, size,
              pad);
        CHECK(out.data[out.len] == '\0', "not NUL-terminated");
        CHECK(dl_base64_encode(&again, out.data + PREFIX_LEN, n) == 0, "encode failed");
        CHECK(again.len == size, "re-encoded to %zu characters from %zu", again.len, size);
        /* a short last group leaves bits unused: its last character may differ */
        for (size_t i = 0; i < size; i++)
            CHECK(again.data[i] == (char)data[i] || (pad > 0 && i == size - (size_t)pad - 1),
                  "re-encoded text differs at %zu", i);
    }
    dl_buf_free(&out);
    dl_buf_free(&again);
}

static void check_encode(const uint8_t *data, size_t size)
{
    dl_buf text = DL_BUF_INIT, back = DL_BUF_INIT;
    CHECK(dl_base64_encode(&text, data, size) == 0, "encode failed");
    CHECK(text.len == (size + 2) / 3 * 4, "%zu characters for %zu bytes", text.len, size);
    CHECK(dl_base64_decode(&back, text.data ? text.data : "", text.len) == 0, "decode(encode(x)) refused");
    CHECK(back.len == size && (size == 0 || memcmp(back.data, data, size) == 0), "decode(encode(x)) ~= x");
    dl_buf_free(&text);
    dl_buf_free(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_decode(data, size);
    check_encode(data, size);
    return 0;
}
