using System.Runtime.InteropServices;
using TorchSharp;
using System.Text;
using static TorchSharp.torch;

namespace LoopRpt.Native;

/// <summary>
/// Loads TorchSharp's native libraries once and turns a failed load into an error that names the real cause.
/// TorchSharp's own message blames a missing libtorch package even when the package is there and the failure is
/// Debian 12's libstdc++ lacking GLIBCXX_3.4.32 (docs/platform.md of the project's shared notes).
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
                InitializeDeviceType(DeviceType.CPU);
                _loaded = true;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                throw new InvalidOperationException(Diagnose(e), e);
            }
        }
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

    internal static string Diagnose(Exception e)
    {
        var sb = new StringBuilder("TorchSharp's native library could not be loaded. ");
        var lib = FindLibTorchSharp();
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

    /// <summary>GLIBCXX_* versions referenced by the binary (non-weak or not) that the system libstdc++ does not define.</summary>
    internal static IReadOnlyList<string> MissingLibstdcxxVersions(string library)
    {
        const string sysLib = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6";
        if (!File.Exists(sysLib)) return [];
        static HashSet<string> Versions(string path) =>
            [.. System.Text.RegularExpressions.Regex.Matches(Encoding.Latin1.GetString(File.ReadAllBytes(path)), @"GLIBCXX_3\.4\.[0-9]+").Select(m => m.Value)];
        var have = Versions(sysLib);
        return [.. Versions(library).Where(v => !have.Contains(v)).Order()];
    }
}
