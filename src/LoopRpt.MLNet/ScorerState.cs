using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using LoopRpt.Checkpoints;
using LoopRpt.Model;
using LoopRpt.MLNet.Persistence;
using LoopRpt.Native;

namespace LoopRpt.MLNet;

/// <summary>
/// What an ML.NET model zip stores for a fitted scorer: a JSON string held by a <c>ValueMapping</c> (the only public
/// ML.NET component that can carry learned state; docs/mlnet.md "Persistence").
/// <para>Format <c>looprpt-mlnet-scorer</c>, history: version 1 —
/// <c>exit_kind</c>, <c>exit_step</c>, <c>exit_threshold</c>, <c>batch_size</c>, <c>context_length</c>, <c>per_step</c>,
/// <c>device</c>, <c>fallback_to_cpu</c>, <c>storage</c> ("Embedded" | "Directory"); Embedded: <c>files</c> = the model
/// directory's files (config.json, meta.json, model.safetensors) as base64; Directory: <c>directory</c> (absolute path)
/// and <c>fingerprint</c> (SHA-256 of config.json and meta.json plus the byte size of model.safetensors).</para>
/// </summary>
internal sealed class ScorerState : SavedState
{
    public const string FormatName = "looprpt-mlnet-scorer";
    public const int CurrentVersion = 1;

    public ScorerState() : base(FormatName, CurrentVersion) { }

    [JsonPropertyName("exit_kind")] public ExitKind ExitKind { get; set; }
    [JsonPropertyName("exit_step")] public int ExitStep { get; set; }
    [JsonPropertyName("exit_threshold")] public double ExitThreshold { get; set; }
    [JsonPropertyName("batch_size")] public int BatchSize { get; set; }
    [JsonPropertyName("context_length")] public int ContextLength { get; set; }
    [JsonPropertyName("per_step")] public bool PerStep { get; set; }
    [JsonPropertyName("device")] public string Device { get; set; } = "cpu";
    [JsonPropertyName("fallback_to_cpu")] public bool FallbackToCpu { get; set; } = true;
    [JsonPropertyName("storage")] public ModelStorage Storage { get; set; }
    [JsonPropertyName("directory")] public string? Directory { get; set; }
    [JsonPropertyName("fingerprint")] public string? Fingerprint { get; set; }
    [JsonPropertyName("files")] public Dictionary<string, string>? Files { get; set; }

    public ExitMode ExitMode => ExitKind switch
    {
        ExitKind.LastStep => ExitMode.Last,
        ExitKind.FixedStep => ExitMode.Fixed(ExitStep),
        ExitKind.QExit => ExitMode.Q(ExitThreshold),
        _ => ExitMode.Expected,
    };

    /// <summary>The state of a live scorer; writes the model directory's files into the state when embedding.</summary>
    public static ScorerState Capture(ScoringEngine engine, ModelMeta meta, string device, bool fallback, ModelStorage storage, string? modelDirectory)
    {
        var s = new ScorerState
        {
            ExitKind = engine.ExitMode.Kind, ExitStep = engine.ExitMode.Step, ExitThreshold = engine.ExitMode.Threshold,
            BatchSize = engine.BatchSize, ContextLength = engine.ContextLength, PerStep = engine.PerStepStatistics,
            Device = device, FallbackToCpu = fallback,
        };
        long bytes = engine.Model.Config.ParameterCount() * (engine.Model.DType == TorchSharp.torch.ScalarType.BFloat16 ? 2 : 4);
        var resolved = storage;
        if (resolved == ModelStorage.Auto)
            resolved = bytes <= AdaptiveExitScoringTransformer.Options.Defaults.MaxEmbeddedBytes ? ModelStorage.Embedded : ModelStorage.Directory;
        s.Storage = resolved;
        if (resolved == ModelStorage.Directory)
        {
            if (modelDirectory is null)
                throw new InvalidOperationException(
                    $"The model's weights take {bytes / (1024.0 * 1024):F0} MB; {storage} storage keeps models over {AdaptiveExitScoringTransformer.Options.Defaults.MaxEmbeddedBytes / (1024 * 1024)} MB " +
                    $"(or any model with ModelStorage.Directory) in a LoopRpt model directory referenced by the ML.NET zip, and none is known: set AdaptiveExitScoringTransformer.Options.{nameof(AdaptiveExitScoringTransformer.Options.ModelDirectory)} " +
                    $"(or LoopedLmTrainerEstimator.Options.{nameof(LoopedLmTrainerEstimator.Options.ModelDirectory)} when training).");
            s.Directory = Path.GetFullPath(modelDirectory);
            s.Fingerprint = FingerprintOf(s.Directory);
            return s;
        }
        var tmp = Path.Combine(Path.GetTempPath(), "looprpt-embed-" + Guid.NewGuid().ToString("N"));
        try
        {
            ModelDirectory.Save(tmp, engine.Model, meta);
            s.Files = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var name in new[] { ModelDirectory.ConfigFile, ModelDirectory.MetaFile, ModelWeights.FileName })
                s.Files[name] = Convert.ToBase64String(File.ReadAllBytes(Path.Combine(tmp, name)));
        }
        finally
        {
            if (System.IO.Directory.Exists(tmp)) System.IO.Directory.Delete(tmp, true);
        }
        return s;
    }

    /// <summary>Parses a state; a foreign or newer format fails with <see cref="InvalidDataException"/>.</summary>
    public static ScorerState Parse(string json) => Parse<ScorerState>(json, FormatName, CurrentVersion, "scorer");

    /// <summary>Rebuilds the scoring engine (loads or unpacks the weights).</summary>
    public ScoringEngine CreateEngine()
    {
        TorchNative.EnsureLoaded();
        var device = TorchNative.ResolveDevice(Device, FallbackToCpu);
        LoadedModel loaded;
        if (Storage == ModelStorage.Directory)
        {
            if (Directory is null || !System.IO.Directory.Exists(Directory))
                throw new DirectoryNotFoundException($"The ML.NET model references the LoopRpt model directory '{Directory}', which does not exist. Copy the directory back to that path or re-save the model embedded.");
            var now = FingerprintOf(Directory);
            if (now != Fingerprint)
                throw new InvalidDataException($"The LoopRpt model directory '{Directory}' changed since the ML.NET model was saved (fingerprint {now}, expected {Fingerprint}).");
            loaded = ModelDirectory.Load(Directory, device);
        }
        else
        {
            if (Files is null) throw new InvalidDataException("The embedded LoopRpt scorer state has no model files.");
            var tmp = Path.Combine(Path.GetTempPath(), "looprpt-unpack-" + Guid.NewGuid().ToString("N"));
            try
            {
                System.IO.Directory.CreateDirectory(tmp);
                foreach (var (name, b64) in Files)
                {
                    if (name.Contains('/') || name.Contains('\\') || name.Contains("..")) throw new InvalidDataException($"Invalid embedded file name '{name}'.");
                    File.WriteAllBytes(Path.Combine(tmp, name), Convert.FromBase64String(b64));
                }
                loaded = ModelDirectory.Load(tmp, device);
            }
            catch (FormatException e)
            {
                throw new InvalidDataException($"The embedded LoopRpt model is corrupt: {e.Message}", e);
            }
            finally
            {
                if (System.IO.Directory.Exists(tmp)) System.IO.Directory.Delete(tmp, true);
            }
        }
        return new ScoringEngine(loaded.Model, ExitMode, BatchSize, Math.Min(ContextLength, loaded.Model.Config.MaxPositionEmbeddings), PerStep);
    }

    internal static string FingerprintOf(string directory)
    {
        using var sha = SHA256.Create();
        var parts = new List<byte>();
        foreach (var name in new[] { ModelDirectory.ConfigFile, ModelDirectory.MetaFile })
        {
            var path = Path.Combine(directory, name);
            if (!File.Exists(path)) throw new FileNotFoundException($"Model directory '{directory}' has no {name}.", path);
            parts.AddRange(File.ReadAllBytes(path));
        }
        var weights = Path.Combine(directory, ModelWeights.FileName);
        if (!File.Exists(weights)) throw new FileNotFoundException($"Model directory '{directory}' has no {ModelWeights.FileName}.", weights);
        parts.AddRange(Encoding.ASCII.GetBytes(new FileInfo(weights).Length.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        return Convert.ToHexString(sha.ComputeHash(parts.ToArray()));
    }
}
