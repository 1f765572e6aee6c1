namespace LoopRpt.Data;

/// <summary>Stable seed derivation (SplitMix64): the same inputs give the same seed in every process, unlike HashCode.</summary>
public static class Seeds
{
    public static long Mix(long seed, params long[] parts)
    {
        ulong x = (ulong)seed;
        foreach (var p in parts) x = SplitMix(x ^ SplitMix((ulong)p + 0x9E3779B97F4A7C15UL));
        return (long)(x & 0x7FFF_FFFF_FFFF_FFFFUL);
    }

    /// <summary>A 32-bit seed for <see cref="Random"/>.</summary>
    public static int Mix32(long seed, params long[] parts) => (int)(Mix(seed, parts) & 0x7FFF_FFFF);

    private static ulong SplitMix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
