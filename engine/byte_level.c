/*
 * GPT-2's byte-level alphabet, which every byte-level BPE tokenizer.json
 * (Qwen, Llama 3, DeepSeek) writes its vocabulary and merges in.
 */
#include "engine/tokenizer_internal.h"

static int is_printable_byte(unsigned b)
{
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

/* The non-printable bytes, in order, map to U+0100 upwards: the 33 of
 * 0x00-0x20, the 34 of 0x7F-0xA0, then 0xAD. */
uint32_t mr_byte_to_codepoint(unsigned char byte)
{
    if (is_printable_byte(byte))
        return byte;
    if (byte <= 0x20)
        return 0x100 + byte;
    if (byte <= 0xA0)
        return 0x100 + 33 + (byte - 0x7F);
    return 0x100 + 67; /* 0xAD */
}

static int codepoint_to_byte(uint32_t cp)
{
    if (cp < 0x100)
        return is_printable_byte(cp) ? (int)cp : -1;
    uint32_t n = cp - 0x100;
    if (n < 33)
        return (int)n;
    if (n < 67)
        return (int)(0x7F + n - 33);
    return n == 67 ? 0xAD : -1;
}

long mr_byte_level_decode(const char *text, size_t len, char *out)
{
    const unsigned char *s = (const unsigned char *)text;
    long n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        if (s[i] < 0x80) {
            cp = s[i++];
        } else if ((s[i] & 0xE0) == 0xC0 && i + 1 < len && (s[i + 1] & 0xC0) == 0x80) {
            cp = (uint32_t)(s[i] & 0x1F) << 6 | (s[i + 1] & 0x3F);
            i += 2;
        } else {
            return -1; /* the alphabet ends at U+0143: two UTF-8 bytes at most */
        }
        int b = codepoint_to_byte(cp);
        if (b < 0)
            return -1;
        out[n++] = (char)b;
    }
    return n;
}

size_t mr_byte_level_encode(const char *bytes, size_t len, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        uint32_t cp = mr_byte_to_codepoint((unsigned char)bytes[i]);
        if (cp < 0x80) {
            out[n++] = (char)cp;
        } else {
            out[n++] = (char)(0xC0 | (cp >> 6));
            out[n++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    return n;
}
