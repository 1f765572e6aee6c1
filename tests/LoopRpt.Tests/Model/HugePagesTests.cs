using LoopRpt.Model;
using LoopRpt.Model.Kernels;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Model;

/// <summary>Weights on 2 MiB pages (<see cref="HugePages"/>): the aligned part of a tensor, the kernel's mode, and the
/// marks the kernel's map of this process shows.</summary>
public class HugePagesTests
{
    static HugePagesTests() => LoopRpt.Native.TorchNative.EnsureLoaded();

    private const long MiB = 1 << 20;

    [Fact]
    public void OnlyWhole2MiBPagesInsideTheTensorAreMarked()
    {
        // Counted by hand: a tensor from 4 KiB past a boundary holds the next page only if it reaches the one after.
        Assert.Equal(((nint)(2 * MiB), 2 * MiB), HugePages.AlignedPart(0x1000, 4 * MiB));
        Assert.Equal(((nint)(2 * MiB), 4 * MiB), HugePages.AlignedPart((nint)(2 * MiB), 4 * MiB));
        Assert.Equal(0, HugePages.AlignedPart(0x1000, 2 * MiB).Bytes);
        Assert.Equal(0, HugePages.AlignedPart((nint)(2 * MiB), 2 * MiB - 1).Bytes);
        Assert.Equal(((nint)(4 * MiB), 2 * MiB), HugePages.AlignedPart((nint)(2 * MiB + 64), 4 * MiB));
    }

    [Fact]
    public void TheKernelsModeIsTheBracketedWord()
    {
        Assert.Equal("madvise", HugePages.ParseMode("always [madvise] never\n"));
        Assert.Equal("never", HugePages.ParseMode("always madvise [never]"));
        Assert.Equal("always", HugePages.ParseMode("[always] madvise never"));
        Assert.Null(HugePages.ParseMode("always madvise never"));
        Assert.Null(HugePages.ParseMode(null));
    }

    /// <summary>A projection of 8 MiB is marked when it is allocated: the mapping that holds its aligned part carries the
    /// kernel's flag "hg" (MADV_HUGEPAGE) in /proc/self/smaps; one of 16 KiB is not marked; turned off, nothing is.</summary>
    [HugePagesFact]
    public void ModelWeightsAreMarkedWhenAllocated()
    {
        bool was = HugePages.Enabled;
        try
        {
            HugePages.Enabled = true;
            long before = HugePages.MarkedBytes;
            using var large = new OuroLinear(1024, 2048, hasBias: false);                 // 8 MiB of float32
            var (from, bytes) = HugePages.AlignedPart(FewRowsKernel.Address(large.Weight), 8 * MiB);
            Assert.True(bytes >= 6 * MiB);
            Assert.True(HugePages.MarkedBytes - before >= bytes);
            Assert.Contains("hg", MappingFlags(from));
            Assert.Contains("hg", MappingFlags(from + (nint)bytes - 1));
            using var small = new OuroLinear(64, 64, hasBias: false);
            Assert.Equal(0, HugePages.Mark(small.Weight));
            HugePages.Enabled = false;
            using var off = empty([8 * MiB / 4]);
            Assert.Equal(0, HugePages.Mark(off));
        }
        finally
        {
            HugePages.Enabled = was;
        }
    }

    /// <summary>The VmFlags of the mapping of this process that holds <paramref name="address"/> (/proc/self/smaps).</summary>
    internal static string[] MappingFlags(nint address)
    {
        bool inside = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            // A mapping's first line: "from-to perms offset dev inode [path]", addresses in hex; then "Key: value" lines.
            var range = line.Split(' ', 2)[0].Split('-');
            if (range.Length == 2 && range.All(r => r.Length > 0 && r.All(Uri.IsHexDigit)))
            {
                inside = (ulong)address >= Convert.ToUInt64(range[0], 16) && (ulong)address < Convert.ToUInt64(range[1], 16);
                continue;
            }
            if (inside && line.StartsWith("VmFlags:", StringComparison.Ordinal))
                return line["VmFlags:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        }
        throw new InvalidOperationException($"No mapping holds 0x{address:x}.");
    }
}
