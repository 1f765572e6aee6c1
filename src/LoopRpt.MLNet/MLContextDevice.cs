using LoopRpt.Native;
using Microsoft.ML;
using static TorchSharp.torch;

namespace LoopRpt.MLNet;

/// <summary>The device of an estimator: its option, else the MLContext's GPU setting.</summary>
internal static class MLContextDevice
{
    /// <summary>The device to use, the name to persist (the request, so a GPU machine uses its GPU after a reload), and the fallback rule.</summary>
    public static (Device Device, string Name, bool Fallback) Resolve(MLContext ml, string? device, bool? fallback)
    {
        bool fb = fallback ?? ml.FallbackToCpu;
        var name = device ?? (ml.GpuDeviceId is { } id ? $"cuda:{id}" : "cpu");
        return (TorchNative.ResolveDevice(name, fb), name, fb);
    }
}
