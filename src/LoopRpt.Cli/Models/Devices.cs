using LoopRpt.Native;
using static TorchSharp.torch;

namespace LoopRpt.Cli.Models;

/// <summary>Device, dtype and thread settings shared by every verb.</summary>
public static class Devices
{
    /// <summary>"cpu", "cuda", "cuda:N" (CUDA needs a CUDA build of TorchSharp; see README "GPU").</summary>
    public static Device Resolve(string device)
    {
        NativeOrThrow();
        try
        {
            return TorchNative.ResolveDevice(device, fallbackToCpu: false);
        }
        catch (ArgumentOutOfRangeException)
        {
            throw CliException.Usage($"--device '{device}' is not a device: expected cpu, cuda or cuda:N.");
        }
        catch (InvalidOperationException e)
        {
            throw new CliException(ExitCodes.EnvironmentError, e.Message, e);
        }
    }

    /// <summary>auto, native or float32 (<c>--bf16-compute</c>).</summary>
    public static LoopRpt.Model.BFloat16Compute ParseBFloat16Compute(string value)
    {
        try { return LoopRpt.Model.BFloat16ComputePolicy.Parse(value); }
        catch (ArgumentOutOfRangeException) { throw CliException.Usage($"--bf16-compute '{value}' is not supported: expected auto, native or float32."); }
    }

    /// <summary>float32 or bfloat16.</summary>
    public static ScalarType ParseDType(string dtype) => dtype.ToLowerInvariant() switch
    {
        "float32" or "fp32" or "f32" => ScalarType.Float32,
        "bfloat16" or "bf16" => ScalarType.BFloat16,
        _ => throw CliException.Usage($"--dtype '{dtype}' is not supported: expected float32 or bfloat16."),
    };

    /// <summary>Loads the native library or fails with the diagnosis (exit code <see cref="ExitCodes.EnvironmentError"/>).</summary>
    public static void NativeOrThrow()
    {
        try
        {
            TorchNative.EnsureLoaded();
        }
        catch (InvalidOperationException e)
        {
            throw new CliException(ExitCodes.EnvironmentError, e.Message + " Run `looprpt env` for details.", e);
        }
    }

    [ThreadStatic] private static int? _requestedThreads;
    [ThreadStatic] private static long _largestModel;

    /// <summary>
    /// Sets libtorch's intra-op threads: <paramref name="threads"/> (--threads) when positive, else the automatic choice
    /// of <see cref="ThreadPolicy"/> from the free cores, refined by <see cref="ForModel"/> once the model's size is known.
    /// </summary>
    internal static ThreadChoice SetThreads(int threads)
    {
        if (threads < 0) throw CliException.Usage($"--threads must be 0 (automatic) or more, got {threads}.");
        NativeOrThrow();
        _requestedThreads = threads;
        _largestModel = 0;
        return Apply(ThreadPolicy.Resolve(threads, parameters: null));
    }

    /// <summary>
    /// With automatic threads (--threads 0, the default), applies the choice for the largest model this verb has loaded
    /// or built; with --threads N it only returns that choice. Before <see cref="SetThreads"/> it does nothing.
    /// </summary>
    internal static ThreadChoice? ForModel(Model.OuroForCausalLM model)
    {
        if (_requestedThreads is not { } requested) return null;
        _largestModel = Math.Max(_largestModel, model.Config.ParameterCount());
        return Apply(ThreadPolicy.Resolve(requested, _largestModel));
    }

    private static ThreadChoice Apply(ThreadChoice choice)
    {
        if (get_num_threads() != choice.Threads) set_num_threads(choice.Threads);
        return choice;
    }
}
