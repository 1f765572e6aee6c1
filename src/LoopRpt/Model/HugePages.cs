using System.Runtime.InteropServices;
using LoopRpt.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace LoopRpt.Model;

/// <summary>
/// Puts a model's weights on 2 MiB pages (Linux transparent huge pages). Decoding reads every weight once per step: on
/// 4 KiB pages a core walks the page tables every 4 KiB of that stream (costly inside a VM) and the hardware prefetchers
/// stop at each page. Measured on a 2-core KVM guest (Zen 4), one core read 2 GiB of weights at 24–25 GB/s on 4 KiB
/// pages and 31 GB/s on 2 MiB pages, and the decode kernel's weight stream 26 → 33 GB/s (docs/benchmarks.md, "Issue 28,
/// fourth round"). Only the weights: libtorch can put every large tensor on huge pages (its THP_MEM_ALLOC_ENABLE=1), but
/// that raised peak memory by a fifth to a third (training +0.5 GB, a 512-token prefill +0.3–0.4 GiB), so LoopRpt leaves
/// that variable to the user.
/// </summary>
/// <remarks>
/// A weight is marked (madvise MADV_HUGEPAGE) right after it is allocated and before anything is written to it, so its
/// first writes (the model's initial draw, or a checkpoint read into it) fault in huge pages directly; the 2 MiB-aligned
/// part of the tensor is marked (its ragged ends stay on 4 KiB pages). The kernel decides: in its mode "madvise" (the
/// usual default) or "always" it gives huge pages where it has them, in "never" none (nothing is marked then).
/// <see cref="Enabled"/> turns it off (the environment variable LOOPRPT_HUGE_PAGES=0 sets its default).
/// </remarks>
public static class HugePages
{
    /// <summary>The environment variable that sets <see cref="Enabled"/>'s default: 0 turns marking off.</summary>
    public const string Variable = "LOOPRPT_HUGE_PAGES";

    /// <summary>Where the kernel says which transparent huge pages it gives: "always [madvise] never", the bracket the mode.</summary>
    internal const string ModeFile = "/sys/kernel/mm/transparent_hugepage/enabled";

    internal const long PageBytes = 2 << 20;

    private const int MadvHugePage = 14;

    private static readonly string? KernelMode = ReadMode();

    /// <summary>Whether new weights are marked for huge pages: true by default where the kernel gives them (Linux, mode
    /// "madvise" or "always") unless <see cref="Variable"/> is 0.</summary>
    public static bool Enabled { get; set; } = Available && Environment.GetEnvironmentVariable(Variable) != "0";

    /// <summary>True where the kernel gives transparent huge pages to marked memory.</summary>
    public static bool Available => KernelMode is "madvise" or "always";

    /// <summary>Bytes of weights marked so far in this process.</summary>
    public static long MarkedBytes => Interlocked.Read(ref _marked);

    private static long _marked;

    /// <summary>In words, for <c>looprpt env</c> and the benchmarks.</summary>
    public static string Description
        => !Available ? $"4 KiB pages: the kernel gives no transparent huge pages here (mode {KernelMode ?? "unknown"})"
         : Enabled ? $"weights on 2 MiB pages where the kernel has them (mode {KernelMode}; {Variable}=0 turns it off)"
         : $"4 KiB pages ({Variable}=0 or turned off)";

    /// <summary>Marks the 2 MiB-aligned part of a freshly allocated CPU tensor for huge pages, where <see cref="Enabled"/>.
    /// Returns the bytes marked (0 for a tensor too small to hold an aligned 2 MiB page, elsewhere, or when turned off).</summary>
    public static long Mark(Tensor t)
    {
        long size = t.NumberOfElements * t.ElementSize;
        if (!Enabled || size < PageBytes || t.device_type != DeviceType.CPU || !t.is_contiguous()) return 0;
        var (from, bytes) = AlignedPart(FewRowsKernel.Address(t), size);
        if (bytes == 0 || MAdvise(from, (nuint)bytes, MadvHugePage) != 0) return 0;
        Interlocked.Add(ref _marked, bytes);
        return bytes;
    }

    /// <summary>The whole 2 MiB pages inside [address, address + bytes): their first address and length (0 where none).</summary>
    internal static (nint From, long Bytes) AlignedPart(nint address, long bytes)
    {
        long first = ((long)address + PageBytes - 1) / PageBytes * PageBytes, end = ((long)address + bytes) / PageBytes * PageBytes;
        return end > first ? ((nint)first, end - first) : (address, 0);
    }

    /// <summary>The bracketed mode of <see cref="ModeFile"/>'s text ("always", "madvise", "never"), or null.</summary>
    internal static string? ParseMode(string? text)
    {
        if (text is null) return null;
        int open = text.IndexOf('['), close = text.IndexOf(']');
        return open >= 0 && close > open ? text[(open + 1)..close] : null;
    }

    private static string? ReadMode()
    {
        try { return OperatingSystem.IsLinux() && File.Exists(ModeFile) ? ParseMode(File.ReadAllText(ModeFile)) : null; }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    [DllImport("libc", EntryPoint = "madvise")]
    private static extern int MAdvise(nint address, nuint length, int advice);
}
