using System.Text.Json;
using System.Text.Json.Nodes;
using LoopRpt.Checkpoints;
using LoopRpt.Model;
using LoopRpt.Native;
using static TorchSharp.torch;

namespace LoopRpt.Interop;

/// <summary>
/// A released Ouro checkpoint (or any directory in its Hugging Face layout) loaded as an <see cref="OuroForCausalLM"/>,
/// with its config, tokenizer and the warnings found while loading; and the writer of that layout.
/// </summary>
/// <remarks>
/// <para>Directory layout, read and written (docs/interop.md):</para>
/// <list type="table">
/// <item><term>config.json</term><description>reference keys (<see cref="OuroConfig"/>); unknown keys kept. Required.</description></item>
/// <item><term>model.safetensors</term><description>all weights, HF key names; or</description></item>
/// <item><term>model-0000i-of-0000n.safetensors + model.safetensors.index.json</term><description>shards and
/// <c>{"metadata": {"total_size"}, "weight_map": {key: shard}}</c>.</description></item>
/// <item><term>tokenizer.json</term><description>byte-level BPE (<see cref="HfTokenizer"/>). Optional.</description></item>
/// <item><term>generation_config.json</term><description>kept as JSON; BOS/EOS ids rewritten from the config on save. Optional.</description></item>
/// </list>
/// <para>Memory: weights are streamed one tensor at a time from the files straight into parameters created in the requested
/// dtype; the only transient extra is one stored tensor (the largest, the embedding, is 200 MB in BF16 for Ouro-1.4B).</para>
/// </remarks>
public sealed class OuroCheckpoint : IDisposable
{
    /// <summary>The model config file.</summary>
    public const string ConfigFileName = "config.json";

    /// <summary>The shard index of a sharded checkpoint.</summary>
    public const string IndexFileName = ModelWeights.IndexFileName;

    /// <summary>The generation defaults file.</summary>
    public const string GenerationConfigFileName = "generation_config.json";

    /// <summary>The ChatML start token, BOS of Ouro's chat format (id 1 in the released tokenizer).</summary>
    public const string ChatMlStart = "<|im_start|>";

    /// <summary>The ChatML end token, EOS of Ouro's chat format (id 2 in the released tokenizer).</summary>
    public const string ChatMlEnd = "<|im_end|>";

    private OuroCheckpoint(string directory, OuroForCausalLM model, HfTokenizer? tokenizer, JsonObject? generationConfig,
        IReadOnlyList<string> weightFiles, string storedDType, IReadOnlyList<string> warnings)
    {
        Directory = directory;
        Model = model;
        Tokenizer = tokenizer;
        GenerationConfig = generationConfig;
        WeightFiles = weightFiles;
        StoredDType = storedDType;
        Warnings = warnings;
    }

    /// <summary>The directory the checkpoint was loaded from (full path).</summary>
    public string Directory { get; }

    /// <summary>The loaded model; owned by this object until <see cref="DetachModel"/>.</summary>
    public OuroForCausalLM Model { get; }

    /// <summary>The model's config, after BOS/EOS corrections.</summary>
    public OuroConfig Config => Model.Config;

    /// <summary>tokenizer.json, when present and <see cref="OuroLoadOptions.LoadTokenizer"/>.</summary>
    public HfTokenizer? Tokenizer { get; }

    /// <summary>generation_config.json as read, or null.</summary>
    public JsonObject? GenerationConfig { get; }

    /// <summary>The safetensors files the weights came from.</summary>
    public IReadOnlyList<string> WeightFiles { get; }

    /// <summary>Stored dtype of the weights (F32, BF16, F16), or "mixed".</summary>
    public string StoredDType { get; }

    /// <summary>Problems that did not stop the load (wrong BOS/EOS ids, list-valued ids, unknown model_type, ...).</summary>
    public IReadOnlyList<string> Warnings { get; }

    private bool _detached;

    /// <summary>Hands the model to the caller: disposing this object no longer disposes it.</summary>
    public OuroForCausalLM DetachModel()
    {
        _detached = true;
        return Model;
    }

    /// <summary>Disposes the model unless it was detached.</summary>
    public void Dispose()
    {
        if (!_detached) Model.Dispose();
    }

    /// <summary>True when <paramref name="directory"/> has a config.json and safetensors weights (single file or index).</summary>
    public static bool IsCheckpointDirectory(string directory)
        => File.Exists(Path.Combine(directory, ConfigFileName))
           && ModelWeights.Exist(directory);

    // ---- Loading ------------------------------------------------------------------------------------------

    /// <summary>
    /// Loads a checkpoint directory (HF/Ouro layout, or a LoopRpt model directory, which shares it).
    /// Throws <see cref="FileNotFoundException"/> for a missing config or weights, <see cref="InvalidDataException"/> for
    /// missing, unexpected or mis-shaped tensors, corrupt files and impossible configs (the message names the file and key),
    /// <see cref="NotSupportedException"/> for config features the model lacks.
    /// </summary>
    public static OuroCheckpoint Load(string directory, OuroLoadOptions? options = null)
    {
        options ??= new OuroLoadOptions();
        if (options.DType is not (ScalarType.Float32 or ScalarType.BFloat16))
            throw new ArgumentOutOfRangeException(nameof(options), options.DType, $"{nameof(OuroLoadOptions)}.{nameof(OuroLoadOptions.DType)} must be Float32 or BFloat16.");
        TorchNative.EnsureLoaded();
        var dir = Path.GetFullPath(directory);
        if (!System.IO.Directory.Exists(dir)) throw new DirectoryNotFoundException($"Checkpoint directory '{dir}' does not exist.");

        var warnings = new List<string>();
        void Warn(string message)
        {
            warnings.Add(message);
            options.OnWarning?.Invoke(message);
        }

        var config = ModelDirectory.ReadConfig(dir, Warn);
        HfTokenizer? tokenizer = null;
        var tokenizerPath = Path.Combine(dir, HfTokenizer.FileName);
        if (options.LoadTokenizer && File.Exists(tokenizerPath))
        {
            tokenizer = HfTokenizer.Load(tokenizerPath);
            if (tokenizer.VocabularySize > config.VocabSize)
                Warn($"'{tokenizerPath}' has ids up to {tokenizer.VocabularySize - 1}, beyond the model's vocab_size {config.VocabSize}: such tokens cannot be embedded.");
        }
        ApplySpecialTokenIds(config, tokenizer, options, Warn);

        JsonObject? generation = null;
        var generationPath = Path.Combine(dir, GenerationConfigFileName);
        if (File.Exists(generationPath))
        {
            try { generation = JsonNode.Parse(File.ReadAllText(generationPath)) as JsonObject; }
            catch (JsonException e) { Warn($"'{generationPath}' is not valid JSON and was ignored ({e.Message})."); }
        }

        var (model, files, stored) = ModelWeights.LoadModel(config, dir, options.Device, options.DType, options.BFloat16Compute);
        return new OuroCheckpoint(dir, model, tokenizer, generation, files, stored, warnings);
    }

    /// <summary>
    /// Released Ouro configs ship <c>bos_token_id = eos_token_id = 0</c> (<c>&lt;|endoftext|&gt;</c>) while the tokenizer's
    /// ChatML tokens are <c>&lt;|im_start|&gt;</c> = 1 and <c>&lt;|im_end|&gt;</c> = 2: warn, and correct when asked.
    /// </summary>
    private static void ApplySpecialTokenIds(OuroConfig config, HfTokenizer? tokenizer, OuroLoadOptions options, Action<string> warn)
    {
        int? start = tokenizer?.TokenToId(ChatMlStart), end = tokenizer?.TokenToId(ChatMlEnd);
        if (options.UseChatMlSpecialTokens && (start is null || end is null))
            warn($"OuroLoadOptions.UseChatMlSpecialTokens is set, but {(tokenizer is null ? "there is no tokenizer.json" : $"'{tokenizer.Source}' lacks {ChatMlStart} or {ChatMlEnd}")}; " +
                 "the BOS/EOS ids were not changed (give BosTokenId / EosTokenId instead).");
        if (config.BosTokenId is { } bos && config.EosTokenId is { } eos && bos == eos)
        {
            if (start is { } s && end is { } e)
            {
                if (options.UseChatMlSpecialTokens)
                {
                    warn($"config.json sets bos_token_id = eos_token_id = {bos}; using the ChatML ids {ChatMlStart} = {s} (BOS) and {ChatMlEnd} = {e} (EOS) as requested.");
                    config.BosTokenId = s;
                    config.EosTokenId = e;
                }
                else if (options.BosTokenId is null && options.EosTokenId is null)
                {
                    warn($"config.json sets bos_token_id = eos_token_id = {bos}, but tokenizer.json has {ChatMlStart} = {s} and {ChatMlEnd} = {e}: " +
                         "released Ouro configs are known to ship these wrong ids. Set OuroLoadOptions.UseChatMlSpecialTokens " +
                         $"(or BosTokenId = {s}, EosTokenId = {e}) to use the ChatML ids; keeping {bos}.");
                }
            }
            else if (options.BosTokenId is null && options.EosTokenId is null)
            {
                warn($"config.json sets bos_token_id = eos_token_id = {bos} and no tokenizer.json with ChatML tokens confirms a fix; " +
                     "released Ouro configs are known to ship bos = eos = 0 where the ChatML ids are 1 and 2. Override with OuroLoadOptions.BosTokenId / EosTokenId if needed.");
            }
        }
        foreach (var (name, value) in new[] { (nameof(OuroLoadOptions.BosTokenId), options.BosTokenId), (nameof(OuroLoadOptions.EosTokenId), options.EosTokenId) })
            if (value is { } v && (v < 0 || v >= config.VocabSize))
                throw new ArgumentOutOfRangeException(nameof(options), v, $"{nameof(OuroLoadOptions)}.{name} = {v} must lie in [0, vocab_size = {config.VocabSize}).");
        if (options.BosTokenId is { } b) config.BosTokenId = b;
        if (options.EosTokenId is { } eo) config.EosTokenId = eo;
    }

    // ---- Saving -------------------------------------------------------------------------------------------

    /// <summary>Saves this checkpoint's model with its tokenizer and the auxiliary files of the directory it came from.</summary>
    public void Save(string directory, OuroSaveOptions? options = null)
    {
        options ??= new OuroSaveOptions();
        Save(Model, directory, new OuroSaveOptions
        {
            DType = options.DType,
            MaxShardBytes = options.MaxShardBytes,
            Tokenizer = options.Tokenizer ?? Tokenizer,
            SourceDirectory = options.SourceDirectory ?? Directory,
        });
    }

    /// <summary>
    /// Writes <paramref name="model"/> in the HF/Ouro layout (config.json with <c>model_type = "ouro"</c>,
    /// <c>architectures = ["OuroForCausalLM"]</c> and <c>torch_dtype</c>; weights single or sharded with an index;
    /// generation_config.json; tokenizer.json), atomically: the directory is replaced only when complete.
    /// Tensors are converted to the stored dtype one at a time.
    /// </summary>
    public static void Save(OuroForCausalLM model, string directory, OuroSaveOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new OuroSaveOptions();
        var dtype = options.DType ?? model.DType;
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new ArgumentOutOfRangeException(nameof(options), dtype, $"{nameof(OuroSaveOptions)}.{nameof(OuroSaveOptions.DType)} must be Float32, BFloat16 or Float16.");
        if (options.MaxShardBytes < 1)
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxShardBytes, $"{nameof(OuroSaveOptions)}.{nameof(OuroSaveOptions.MaxShardBytes)} must be positive.");

        var config = model.Config.Clone();
        config.ModelType = "ouro";
        config.Architectures = ["OuroForCausalLM"];
        config.TorchDtype = TorchDTypeName(dtype);
        // Newer transformers write "dtype" beside (or instead of) "torch_dtype": keep the two consistent.
        if (config.Extra?.ContainsKey("dtype") == true)
            config.Extra["dtype"] = JsonSerializer.SerializeToElement(config.TorchDtype);

        var tensors = ModelWeights.Tensors(model).ToList();
        int elementSize = SafeTensors.ElementSize(SafeTensors.DTypeName(dtype));
        var shards = new List<List<(string Name, Tensor Tensor)>> { new() };
        long shardBytes = 0, totalBytes = 0;
        foreach (var t in tensors)
        {
            long bytes = t.Tensor.numel() * elementSize;
            if (shards[^1].Count > 0 && shardBytes + bytes > options.MaxShardBytes)
            {
                shards.Add(new());
                shardBytes = 0;
            }
            shards[^1].Add(t);
            shardBytes += bytes;
            totalBytes += bytes;
        }

        var source = options.SourceDirectory is null ? null : Path.GetFullPath(options.SourceDirectory);
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        AtomicDirectory.Write(directory, tmp =>
        {
            if (source is not null && System.IO.Directory.Exists(source))
                foreach (var file in System.IO.Directory.EnumerateFiles(source).Where(IsAuxiliaryFile))
                    File.Copy(file, Path.Combine(tmp, Path.GetFileName(file)));

            File.WriteAllText(Path.Combine(tmp, ConfigFileName), config.ToJson());
            WriteGenerationConfig(Path.Combine(tmp, GenerationConfigFileName), config);
            if (options.Tokenizer is not null) options.Tokenizer.Save(Path.Combine(tmp, HfTokenizer.FileName));

            if (shards.Count == 1)
            {
                SafeTensors.Save(Path.Combine(tmp, ModelWeights.FileName), shards[0], metadata, dtype);
                return;
            }
            var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < shards.Count; i++)
            {
                var name = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
                SafeTensors.Save(Path.Combine(tmp, name), shards[i], metadata, dtype);
                foreach (var (key, _) in shards[i]) weightMap[key] = name;
            }
            var index = new JsonObject
            {
                ["metadata"] = new JsonObject { ["total_size"] = totalBytes },
                ["weight_map"] = new JsonObject(weightMap.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
            };
            File.WriteAllText(Path.Combine(tmp, IndexFileName), index.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        });
    }

    /// <summary>The <c>torch_dtype</c> string of a dtype: float32, bfloat16, float16.</summary>
    public static string TorchDTypeName(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Only float32, bfloat16 and float16 have torch_dtype names here."),
    };

    /// <summary>Files of a source directory that travel with a saved model: remote code, tokenizer side files, docs.</summary>
    private static bool IsAuxiliaryFile(string path)
    {
        var name = Path.GetFileName(path);
        return name.EndsWith(".py", StringComparison.Ordinal) || name.EndsWith(".jinja", StringComparison.Ordinal)
            || name is "tokenizer_config.json" or "special_tokens_map.json" or "vocab.json" or "merges.txt" or "added_tokens.json"
                or GenerationConfigFileName or HfTokenizer.FileName or "README.md"
            || name.StartsWith("LICENSE", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>Keeps an existing generation_config.json (copied from the source) and sets its BOS/EOS/pad ids from the config.</summary>
    private static void WriteGenerationConfig(string path, OuroConfig config)
    {
        JsonObject generation;
        try { generation = File.Exists(path) ? JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? new JsonObject() : new JsonObject(); }
        catch (JsonException) { generation = new JsonObject(); }
        if (config.BosTokenId is { } bos) generation["bos_token_id"] = bos;
        if (config.EosTokenId is { } eos) generation["eos_token_id"] = eos;
        if (config.PadTokenId is { } pad) generation["pad_token_id"] = pad;
        File.WriteAllText(path, generation.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
