using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using LoopRpt.Model;
using LoopRpt.Native;
using static TorchSharp.torch;

namespace LoopRpt.Checkpoints;

/// <summary>
/// Human-readable description of a saved model (<c>meta.json</c>).
/// Format history: version 1 — config.json, model.safetensors (reference key names), meta.json; checkpoints add
/// training_state.safetensors (optimizer moments <c>optimizer.exp_avg.NAME</c>/<c>optimizer.exp_avg_sq.NAME</c>,
/// objective state <c>objective.NAME</c>) and trainer_state.json.
/// </summary>
public sealed class ModelMeta
{
    [JsonPropertyName("format")] public string Format { get; set; } = ModelDirectory.FormatName;
    [JsonPropertyName("format_version")] public int FormatVersion { get; set; } = ModelDirectory.FormatVersion;
    [JsonPropertyName("library_version")] public string LibraryVersion { get; set; } = typeof(ModelDirectory).Assembly.GetName().Version?.ToString() ?? "0";
    [JsonPropertyName("created_utc")] public DateTime CreatedUtc { get; set; } = DateTime.UtcNow;
    [JsonPropertyName("dtype")] public string DType { get; set; } = "float32";
    /// <summary>Optimizer steps taken over all stages.</summary>
    [JsonPropertyName("step")] public long Step { get; set; }
    [JsonPropertyName("tokens_seen")] public long TokensSeen { get; set; }
    /// <summary>Stages run so far, in order, with their step counts.</summary>
    [JsonPropertyName("stages")] public List<StageRecord> Stages { get; set; } = [];
    /// <summary>Last logged metrics (name → values; one value, or one per loop step).</summary>
    [JsonPropertyName("metrics")] public Dictionary<string, double[]> Metrics { get; set; } = [];
    /// <summary>Description of the tokenizer the model was trained with (kind, files, special ids), if any.</summary>
    [JsonPropertyName("tokenizer")] public JsonObject? Tokenizer { get; set; }

    public ModelMeta Clone() => JsonSerializer.Deserialize<ModelMeta>(JsonSerializer.Serialize(this))!;
}

/// <summary>One stage in a model's training history.</summary>
public sealed record StageRecord([property: JsonPropertyName("name")] string Name, [property: JsonPropertyName("steps")] long Steps);

/// <summary>A loaded model directory.</summary>
public sealed record LoadedModel(OuroForCausalLM Model, ModelMeta Meta, string Directory);

/// <summary>
/// LoopRpt's model directory: <c>config.json</c> (reference keys), <c>model.safetensors</c> (reference key names,
/// float32 or bfloat16), <c>meta.json</c>. Saves are atomic (the whole directory is built aside and swapped in).
/// </summary>
public static class ModelDirectory
{
    public const string FormatName = "looprpt-model";
    public const int FormatVersion = 1;
    public const string ConfigFile = "config.json";
    public const string MetaFile = "meta.json";

    private static readonly JsonSerializerOptions MetaJson = new() { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    /// <summary>
    /// Saves atomically; <paramref name="writeExtra"/> may add files (tokenizer, training state) to the temporary directory.
    /// The save replaces the whole directory, so an existing one must be empty or a LoopRpt model directory
    /// (<see cref="CheckReplaceable"/>): a folder of other files is refused, never deleted.
    /// </summary>
    /// <exception cref="IOException"><paramref name="directory"/> is an existing folder that holds other files.</exception>
    public static void Save(string directory, OuroForCausalLM lm, ModelMeta meta, Action<string>? writeExtra = null)
    {
        CheckReplaceable(directory);
        AtomicDirectory.Write(directory, tmp => WriteInto(tmp, lm, meta, writeExtra));
    }

    /// <summary>
    /// Why <see cref="Save"/> may not replace <paramref name="directory"/>, or null when it may: it does not exist, is an
    /// empty folder, or is a LoopRpt model directory (<see cref="IsModelDirectory"/>). Anything else — a folder of user
    /// files, a Hugging Face download, a checkpoint root — would be deleted by the swap.
    /// </summary>
    public static string? ReplaceProblem(string directory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory));
        if (File.Exists(full)) return $"'{directory}' is an existing file, not a folder.";
        if (!Directory.Exists(full) || !Directory.EnumerateFileSystemEntries(full).Any() || IsModelDirectory(full)) return null;
        if (File.Exists(Path.Combine(full, CheckpointManager.LatestFile)) || Directory.EnumerateDirectories(full, "step-*").Any())
            return $"'{directory}' is a checkpoint folder; saving a model there would replace every checkpoint in it.";
        var sample = Directory.EnumerateFileSystemEntries(full).Select(Path.GetFileName).Order(StringComparer.Ordinal).Take(3).ToList();
        return $"'{directory}' is an existing folder that is not a LoopRpt model directory (it holds {string.Join(", ", sample.Select(n => $"'{n}'"))}" +
               $"{(Directory.EnumerateFileSystemEntries(full).Skip(3).Any() ? ", ..." : "")}); saving a model there would delete its contents. " +
               "Choose a new or empty folder, or a model directory to replace.";
    }

    /// <summary>Throws <see cref="IOException"/> with <see cref="ReplaceProblem"/> when <see cref="Save"/> may not replace <paramref name="directory"/>.</summary>
    public static void CheckReplaceable(string directory)
    {
        if (ReplaceProblem(directory) is { } problem) throw new IOException(problem);
    }

    /// <summary>Writes the files into an existing directory (no atomicity; used inside an atomic write).</summary>
    public static void WriteInto(string directory, OuroForCausalLM lm, ModelMeta meta, Action<string>? writeExtra = null)
    {
        var m = meta.Clone();
        m.Format = FormatName;
        m.FormatVersion = FormatVersion;
        m.DType = lm.DType == ScalarType.BFloat16 ? "bfloat16" : "float32";
        var config = lm.Config.Clone();
        config.TorchDtype = m.DType;
        File.WriteAllText(Path.Combine(directory, ConfigFile), config.ToJson());
        ModelWeights.Save(lm, Path.Combine(directory, ModelWeights.FileName));
        File.WriteAllText(Path.Combine(directory, MetaFile), JsonSerializer.Serialize(m, MetaJson));
        writeExtra?.Invoke(directory);
    }

    /// <summary>True if the directory looks like a LoopRpt model directory (has meta.json of this format).</summary>
    public static bool IsModelDirectory(string directory) => File.Exists(Path.Combine(directory, MetaFile)) && File.Exists(Path.Combine(directory, ConfigFile));

    /// <summary>
    /// The one reader of a <c>config.json</c> (LoopRpt and Hugging Face layouts): required keys checked, derived defaults
    /// filled, ids given as lists reduced to their first element (with a warning to <paramref name="warn"/>), an unknown
    /// <c>model_type</c> warned about, and features the model does not implement (<c>rope_scaling</c>,
    /// <c>attention_bias</c>, sliding windows) refused.
    /// </summary>
    /// <param name="directory">The model directory (holding config.json).</param>
    /// <param name="warn">Receives problems that do not stop the load.</param>
    /// <exception cref="FileNotFoundException">There is no config.json.</exception>
    /// <exception cref="InvalidDataException">It is not valid JSON, a key has the wrong type, or it describes an impossible model.</exception>
    /// <exception cref="NotSupportedException">It asks for a feature this model does not implement.</exception>
    public static OuroConfig ReadConfig(string directory, Action<string>? warn = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        var path = Path.Combine(directory, ConfigFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"Model directory '{directory}' has no {ConfigFile}.", path);
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                ?? throw new InvalidDataException($"'{path}' is not a JSON object.");
        }
        catch (JsonException e) { throw new InvalidDataException($"'{path}' is not valid JSON ({e.Message}).", e); }

        OuroConfig.CheckRequiredKeys(root, path);
        OuroConfig.ApplyDerivedDefaults(root);
        foreach (var key in new[] { "bos_token_id", "eos_token_id", "pad_token_id" })
            if (root[key] is JsonArray list)
            {
                var first = list.Count > 0 ? list[0]?.DeepClone() : null;
                warn?.Invoke($"'{path}': {key} is a list {list.ToJsonString()}; the model uses its first element {first?.ToJsonString() ?? "null"}.");
                root[key] = first;
            }
        if (root["model_type"] is JsonValue mt && mt.GetValueKind() == JsonValueKind.String && mt.GetValue<string>() is var type && type != "ouro")
            warn?.Invoke($"'{path}': model_type is '{type}', not 'ouro'; loading it as an Ouro looped model.");
        if (root["rope_scaling"] is JsonObject)
            throw new NotSupportedException($"'{path}': rope_scaling is set; this model implements plain RoPE only.");
        if (root["attention_bias"] is JsonValue ab && ab.GetValueKind() == JsonValueKind.True)
            throw new NotSupportedException($"'{path}': attention_bias = true; this model's projections have no bias.");
        if (root["use_sliding_window"] is JsonValue sw && sw.GetValueKind() == JsonValueKind.True)
            throw new NotSupportedException($"'{path}': use_sliding_window = true; this model implements full attention only.");
        try
        {
            return OuroConfig.FromJson(root.ToJsonString());
        }
        catch (Exception e) when (e is JsonException or FormatException) { throw new InvalidDataException($"'{path}': a key has the wrong type ({e.Message}).", e); }
        catch (ArgumentOutOfRangeException e) { throw new InvalidDataException($"'{path}' describes an impossible model: {e.Message}", e); }
    }

    public static ModelMeta ReadMeta(string directory)
    {
        var path = Path.Combine(directory, MetaFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"Model directory '{directory}' has no {MetaFile}.", path);
        ModelMeta? meta;
        try
        {
            meta = JsonSerializer.Deserialize<ModelMeta>(File.ReadAllText(path), MetaJson);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e);
        }
        if (meta is null || meta.Format != FormatName)
            throw new InvalidDataException($"'{path}' is not a LoopRpt model description (format '{meta?.Format}', expected '{FormatName}').");
        if (meta.FormatVersion > FormatVersion || meta.FormatVersion < 1)
            throw new InvalidDataException($"'{path}' has format_version {meta.FormatVersion}; this LoopRpt reads versions 1 to {FormatVersion}. Upgrade LoopRpt to load it.");
        return meta;
    }

    /// <summary>
    /// Loads a LoopRpt model directory onto <paramref name="device"/> in <paramref name="dtype"/> (default: the stored dtype):
    /// <see cref="ReadConfig"/>, <see cref="ReadMeta"/> and <see cref="ModelWeights.LoadModel"/>, without a tokenizer
    /// (<c>LoopRpt.Inference.ModelOpener.Open</c> also opens the tokenizer and the other layouts).
    /// Missing, truncated, corrupt or mismatched files fail with an exception naming the file and the problem.
    /// </summary>
    public static LoadedModel Load(string directory, Device? device = null, ScalarType? dtype = null)
    {
        TorchNative.EnsureLoaded();
        AtomicDirectory.Recover(directory);
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"Model directory '{directory}' does not exist.");
        var config = ReadConfig(directory);
        var meta = ReadMeta(directory);
        var stored = meta.DType == "bfloat16" ? ScalarType.BFloat16 : ScalarType.Float32;
        var (lm, _, _) = ModelWeights.LoadModel(config, directory, device, dtype ?? stored);
        return new LoadedModel(lm, meta, Path.GetFullPath(directory));
    }
}
