using System.Runtime.InteropServices;
using TorchSharp;
using System.Text;
using static TorchSharp.torch;

namespace LoopRpt.Native;

/// <summary>
/// Loads TorchSharp's native libraries once and turns a failed load into an error that names the real cause.
/// TorchSharp's own message blames a missing libtorch package even when the package is there and the failure is
/// Debian 12's libstdc++ lacking GLIBCXX_3.4.32 (docs/platform.md §1).
/// </summary>
public static class TorchNative
{
    private static readonly object Gate = new();
    private static bool _loaded;

    /// <summary>Ensures the CPU backend is loaded; throws <see cref="InvalidOperationException"/> with the diagnosis otherwise.</summary>
    public static void EnsureLoaded()
    {
        if (_loaded) return;
        lock (Gate)
        {
            if (_loaded) return;
            try
            {
                LimitOpenMpSpinning();
                InitializeCpu();
                _loaded = true;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                throw new InvalidOperationException(Diagnose(e, FindLibTorchSharp()), e);
            }
        }
    }

    // Its own method, compiled only when called: the JIT may run TorchSharp's static initializers (and so load libtorch)
    // when it compiles a method that uses them, which must happen after LimitOpenMpSpinning.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void InitializeCpu() => InitializeDeviceType(DeviceType.CPU);

    /// <summary>The environment variable of libgomp (libtorch's OpenMP runtime on Linux) that bounds how long its workers
    /// spin after a parallel operation before they sleep.</summary>
    public const string SpinCountVariable = "GOMP_SPINCOUNT";

    /// <summary>OpenMP's own wait-policy variable (ACTIVE or PASSIVE); set, it is left alone like <see cref="SpinCountVariable"/>.</summary>
    public const string WaitPolicyVariable = "OMP_WAIT_POLICY";

    /// <summary>
    /// The spin count LoopRpt gives libgomp where the environment sets neither <see cref="SpinCountVariable"/> nor
    /// <see cref="WaitPolicyVariable"/>: 1,000 rounds (tens of microseconds) instead of libgomp's 300,000 (milliseconds).
    /// A worker that spins for milliseconds after every small parallel operation holds a core that the decode kernel's
    /// own workers and the calling thread need: with 2 cores, decoding at 2 threads ran no faster than at 1 until the
    /// spin was cut (docs/benchmarks.md, "OpenMP workers that spin"); training is unchanged within noise.
    /// </summary>
    public const int DefaultSpinCount = 1000;

    /// <summary>What governs libtorch's OpenMP spinning in this process, in words (benchmarks print it).</summary>
    public static string OpenMpSpinning { get; private set; } = "libtorch not loaded by LoopRpt yet";

    [DllImport("libc", EntryPoint = "setenv")]
    private static extern int SetEnv(string name, string value, int overwrite);

    // libgomp reads its environment once, when it is loaded (with libtorch): the variable must be in the native
    // environment before that. .NET's Environment.SetEnvironmentVariable changes only the managed copy on Unix, so the
    // libc setenv is called too.
    private static void LimitOpenMpSpinning()
    {
        var (set, description) = ChooseSpinning(OperatingSystem.IsLinux(), Environment.GetEnvironmentVariable(WaitPolicyVariable),
                                                Environment.GetEnvironmentVariable(SpinCountVariable), LibGompLoaded());
        if (set is not null)
        {
            if (SetEnv(SpinCountVariable, set, 0) != 0) description = $"libgomp's default (setting {SpinCountVariable} failed)";
            else Environment.SetEnvironmentVariable(SpinCountVariable, set);
        }
        OpenMpSpinning = description;
    }

    /// <summary>The spin count to set (null: leave the environment as it is) and a description of what then governs.</summary>
    internal static (string? Set, string Description) ChooseSpinning(bool linux, string? waitPolicy, string? spinCount, bool libGompLoaded)
    {
        if (!linux) return (null, "not Linux: the OpenMP runtime's defaults");
        if (waitPolicy is not null || spinCount is not null)
            return (null, $"as the environment sets it ({string.Join(", ", new[] { (WaitPolicyVariable, waitPolicy), (SpinCountVariable, spinCount) }.Where(v => v.Item2 is not null).Select(v => $"{v.Item1}={v.Item2}"))})");
        if (libGompLoaded)
            return (null, $"libgomp's default (300,000 spin rounds): libtorch was loaded before LoopRpt could set {SpinCountVariable}");
        string value = DefaultSpinCount.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return (value, $"{SpinCountVariable}={value} (set by LoopRpt; set {SpinCountVariable} or {WaitPolicyVariable} to choose otherwise)");
    }

    /// <summary>True when a libgomp is mapped into this process (Linux; false where that cannot be read).</summary>
    internal static bool LibGompLoaded()
    {
        try { return OperatingSystem.IsLinux() && File.ReadLines("/proc/self/maps").Any(l => l.Contains("/libgomp", StringComparison.Ordinal)); }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return false; }
    }

    /// <summary>Resolves a device: "cpu", "cuda", "cuda:1"; CUDA requested but absent either falls back or throws.</summary>
    public static Device ResolveDevice(string? device, bool fallbackToCpu)
    {
        EnsureLoaded();
        if (string.IsNullOrWhiteSpace(device) || device.Equals("cpu", StringComparison.OrdinalIgnoreCase)) return CPU;
        if (!device.StartsWith("cuda", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentOutOfRangeException(nameof(device), device, "Device must be 'cpu', 'cuda' or 'cuda:N'.");
        if (!cuda.is_available())
        {
            if (fallbackToCpu) return CPU;
            throw new InvalidOperationException(
                $"Device '{device}' was requested but CUDA is not available: reference a CUDA build of TorchSharp " +
                "(TorchSharp-cuda-linux, or libtorch-cuda-12.8-linux-x64) in the application and run on a machine with an NVIDIA driver, " +
                "or allow CPU fallback.");
        }
        return new Device(device);
    }

    /// <summary>The message for a failed native load; <paramref name="lib"/> is the LibTorchSharp binary found, if any.</summary>
    internal static string Diagnose(Exception e, string? lib)
    {
        var sb = new StringBuilder("TorchSharp's native library could not be loaded. ");
        if (lib is null)
        {
            sb.Append("No libLibTorchSharp.so was found next to the application: the application must reference a libtorch " +
                      "native package (libtorch-cpu-linux-x64 2.10.0 for CPU, or a CUDA build), not only the managed TorchSharp package.");
        }
        else if (OperatingSystem.IsLinux() && MissingLibstdcxxVersions(lib) is { Count: > 0 } missing)
        {
            sb.Append($"{lib} requires {string.Join(", ", missing)} from libstdc++, which this system's libstdc++ lacks ")
              .Append("(Debian 12 ships GLIBCXX_3.4.30; TorchSharp 0.107 was built with GCC 13). ")
              .Append("Fix: build the application inside the LoopRpt repository (its Directory.Build.targets marks that version weak in the copy under bin/), ")
              .Append("or import that targets file into your project, or install a libstdc++ from GCC 13 or newer.");
        }
        else
        {
            sb.Append($"Found {lib}; run `ldd {lib}` to see which dependency fails to resolve.");
        }
        sb.Append(" Original error: ").Append(e.Message);
        return sb.ToString();
    }

    private static string? FindLibTorchSharp()
    {
        foreach (var dir in new[] { AppContext.BaseDirectory, Path.Combine(AppContext.BaseDirectory, "runtimes", RuntimeInformation.RuntimeIdentifier, "native"),
                                    Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native") })
        {
            var p = Path.Combine(dir, OperatingSystem.IsWindows() ? "LibTorchSharp.dll" : OperatingSystem.IsMacOS() ? "libLibTorchSharp.dylib" : "libLibTorchSharp.so");
            if (File.Exists(p)) return p;
        }
        return null;
    }

    /// <summary>
    /// libstdc++ symbol versions (GLIBCXX_*, CXXABI_*) that <paramref name="library"/> requires (not marked weak in its
    /// ELF version-needs table) and that the system libstdc++ does not define.
    /// </summary>
    internal static IReadOnlyList<string> MissingLibstdcxxVersions(string library, string systemLibstdcxx = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6")
    {
        if (!File.Exists(systemLibstdcxx) || !File.Exists(library)) return [];
        var have = new HashSet<string>(System.Text.RegularExpressions.Regex
            .Matches(Encoding.Latin1.GetString(File.ReadAllBytes(systemLibstdcxx)), @"(GLIBCXX|CXXABI)_[0-9.]+").Select(m => m.Value));
        return [.. RequiredVersions(File.ReadAllBytes(library), "libstdc++").Where(v => !have.Contains(v)).Distinct().Order()];
    }

    /// <summary>Non-weak version requirements on <paramref name="fileprefix"/> from an ELF64 little-endian SHT_GNU_verneed section.</summary>
    internal static IEnumerable<string> RequiredVersions(byte[] b, string fileprefix)
    {
        if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F' || b[4] != 2) yield break;
        long shoff = BitConverter.ToInt64(b, 0x28);
        int shentsize = BitConverter.ToUInt16(b, 0x3A), shnum = BitConverter.ToUInt16(b, 0x3C);
        for (int i = 0; i < shnum; i++)
        {
            long sh = shoff + (long)i * shentsize;
            if (BitConverter.ToUInt32(b, (int)sh + 4) != 0x6ffffffe) continue;                 // SHT_GNU_verneed
            long off = BitConverter.ToInt64(b, (int)sh + 0x18);
            int link = BitConverter.ToInt32(b, (int)sh + 0x28);
            long strOff = BitConverter.ToInt64(b, (int)(shoff + (long)link * shentsize) + 0x18);
            string Str(long o) { int s = (int)(strOff + o), e = s; while (b[e] != 0) e++; return Encoding.ASCII.GetString(b, s, e - s); }
            while (true)
            {
                int count = BitConverter.ToUInt16(b, (int)off + 2);
                string file = Str(BitConverter.ToUInt32(b, (int)off + 4));
                long aux = off + BitConverter.ToUInt32(b, (int)off + 8);
                uint next = BitConverter.ToUInt32(b, (int)off + 12);
                for (int k = 0; k < count; k++)
                {
                    ushort flags = BitConverter.ToUInt16(b, (int)aux + 4);                       // VER_FLG_WEAK = 2
                    if (file.StartsWith(fileprefix, StringComparison.Ordinal) && (flags & 2) == 0)
                        yield return Str(BitConverter.ToUInt32(b, (int)aux + 8));
                    uint an = BitConverter.ToUInt32(b, (int)aux + 12);
                    if (an == 0) break;
                    aux += an;
                }
                if (next == 0) break;
                off += next;
            }
        }
    }
}
