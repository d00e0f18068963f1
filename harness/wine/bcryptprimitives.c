/* A stand-in for bcryptprimitives.dll's ProcessPrng, which Wine 8 (Debian
 * 12's) lacks and Rust's standard library calls at start-up since 1.78:
 * the same random bytes from RtlGenRandom. Built by harness/wine/wine.sh
 * and put beside teardown.exe; a Wine that has ProcessPrng loads its own. */
#include <windows.h>
#include <ntsecapi.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!RtlGenRandom(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
