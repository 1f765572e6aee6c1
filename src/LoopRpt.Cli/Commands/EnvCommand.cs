using System.CommandLine;
using System.Reflection;
using System.Runtime.InteropServices;
using LoopRpt.Native;
using static TorchSharp.torch;

namespace LoopRpt.Cli.Commands;

/// <summary><c>looprpt env</c>: versions, native-library load status (with the fix when it fails) and devices.</summary>
internal static class EnvCommand
{
    public static Command Create()
    {
        var device = new Option<string?>("--device") { Description = "Also check that this device (cpu, cuda, cuda:N) can be used." };
        var cmd = new Command("env", "Check the environment: .NET, TorchSharp and libtorch versions, native-library load, devices.") { device };
        cmd.SetAction(pr => Run(pr.GetValue(device)));
        return cmd;
    }

    private static int Run(string? device)
    {
        var o = CliContext.Require().Output;
        var torchSharp = typeof(TorchSharp.torch).Assembly;
        o.WriteLine($"looprpt           {Version(typeof(CliApp).Assembly)}");
        o.WriteLine($"LoopRpt library   {Version(typeof(TorchNative).Assembly)}");
        o.WriteLine($".NET runtime      {RuntimeInformation.FrameworkDescription} ({RuntimeInformation.RuntimeIdentifier})");
        o.WriteLine($"OS                {RuntimeInformation.OSDescription}; {Environment.ProcessorCount} logical cores");
        o.WriteLine($"TorchSharp        {Version(torchSharp)}");
        o.WriteLine($"libtorch package  {LibTorchPackage() ?? "not found next to the application (reference libtorch-cpu-linux-x64 or a CUDA build)"}");
        try
        {
            TorchNative.EnsureLoaded();
        }
        catch (InvalidOperationException e)
        {
            o.WriteLine("native library    FAILED");
            CliContext.Require().Error.WriteLine(e.Message);
            return ExitCodes.EnvironmentError;
        }
        o.WriteLine("native library    loaded");
        o.WriteLine($"OpenMP spinning   {TorchNative.OpenMpSpinning}");
        o.WriteLine($"huge pages        {LoopRpt.Model.HugePages.Description}");
        var threads = Models.ThreadPolicy.Resolve(0, parameters: null);
        o.WriteLine($"threads           {threads.Threads} by default ({threads.Reason}); models under {Models.ThreadPolicy.SmallModelParameters / 1_000_000}M parameters: 1; --threads N overrides");
        o.WriteLine($"                  libtorch's own default here: {get_num_threads()} (one per physical core, whatever else runs)");
        var cpu = LoopRpt.Model.CpuFeatures.Current;
        var bf16 = LoopRpt.Model.BFloat16ComputePolicy.Resolve(LoopRpt.Model.BFloat16Compute.Auto, cpu);
        o.WriteLine($"bfloat16 compute  {(bf16 == LoopRpt.Model.BFloat16Compute.Float32 ? "float32 from bfloat16 storage" : "native bfloat16")} on this CPU ({cpu}{(cpu.Avx512BF16 ? "" : "; no avx512_bf16")}); --bf16-compute native|float32 overrides");
        bool cudaOk = cuda.is_available();
        o.WriteLine($"CUDA              {(cudaOk ? $"available, {cuda.device_count()} device(s)" : "not available (CPU build of libtorch, or no NVIDIA driver)")}");
        if (device is not null)
        {
            var d = Models.Devices.Resolve(device);
            using var t = ones(2, 2, device: d);
            o.WriteLine($"device {device,-10} ok ({(t.matmul(t).sum().cpu().item<float>() == 8 ? "matmul checked" : "matmul WRONG")})");
        }
        return ExitCodes.Success;
    }

    private static string Version(Assembly a)
        => a.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? a.GetName().Version?.ToString() ?? "?";

    /// <summary>The libtorch version from the native files beside the app (libtorch_cpu.so / libtorch_cuda.so names carry none, so read the deps file).</summary>
    private static string? LibTorchPackage()
    {
        var deps = Directory.GetFiles(AppContext.BaseDirectory, "*.deps.json");
        foreach (var f in deps)
        {
            var text = File.ReadAllText(f);
            var m = System.Text.RegularExpressions.Regex.Match(text, "\"(libtorch-[a-z0-9.-]+?)/([0-9][^\"]*)\"");
            if (m.Success) return $"{m.Groups[1].Value} {m.Groups[2].Value}";
        }
        return null;
    }
}
