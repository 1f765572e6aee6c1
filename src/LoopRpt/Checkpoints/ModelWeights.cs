using System.Text.Json;
using System.Text.Json.Nodes;
using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Checkpoints;

/// <summary>Moves an <see cref="OuroForCausalLM"/>'s parameters to and from safetensors under the reference key names.</summary>
public static class ModelWeights
{
    /// <summary>The weights file of an unsharded model.</summary>
    public const string FileName = "model.safetensors";

    /// <summary>The shard index of a sharded model (<c>{"weight_map": {key: shard}}</c>).</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>True when <paramref name="directory"/> holds safetensors weights: <see cref="FileName"/> or <see cref="IndexFileName"/>.</summary>
    public static bool Exist(string directory)
        => File.Exists(Path.Combine(directory, FileName)) || File.Exists(Path.Combine(directory, IndexFileName));

    /// <summary>Reference-named tensors to save; a tied <c>lm_head.weight</c> is omitted (HF convention).</summary>
    public static IEnumerable<(string Name, Tensor Tensor)> Tensors(OuroForCausalLM lm)
        => Stored(lm).Select(p => (p.Name, (Tensor)p.Param));

    /// <summary>
    /// The stored parameters: a tied <c>lm_head.weight</c> is the embedding under another name. It is dropped by name because
    /// TorchSharp hands out a distinct wrapper (and handle) per name for one shared tensor, so deduplicating by handle keeps both.
    /// </summary>
    private static IEnumerable<(string Name, TorchSharp.Modules.Parameter Param)> Stored(OuroForCausalLM lm)
        => lm.UniqueParameters().Where(p => !(lm.Config.TieWordEmbeddings && p.Name == "lm_head.weight"));

    /// <summary>Saves the weights in the model's dtype (float32 or bfloat16) to a safetensors file.</summary>
    public static void Save(OuroForCausalLM lm, string path, ScalarType? dtype = null)
    {
        // Converted one tensor at a time while writing: never a second copy of the whole model.
        SafeTensors.Save(path, Tensors(lm), new Dictionary<string, string> { ["format"] = "pt" }, dtype);
    }

    /// <summary>
    /// Loads weights into <paramref name="lm"/>, one tensor at a time, converting dtype and device. Every model key must
    /// be present with the right shape, and the file may hold no unknown keys; errors name the key and the file.
    /// </summary>
    public static void Load(OuroForCausalLM lm, string path)
    {
        using var file = SafeTensors.Open(path);
        Load(lm, [file]);
    }

    /// <summary>Loads from several files (shards): each key must be in exactly one of them.</summary>
    public static void Load(OuroForCausalLM lm, IReadOnlyList<SafeTensorsFile> files)
    {
        var expected = Stored(lm).ToDictionary(p => p.Name, p => p.Param);
        var owner = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        foreach (var f in files)
            foreach (var key in f.Tensors.Keys)
            {
                if (!owner.TryAdd(key, f)) throw new InvalidDataException($"Tensor '{key}' appears in both '{owner[key].Path}' and '{f.Path}'.");
            }
        // A tied head may still be stored by some writers: accept it only if tied.
        if (lm.Config.TieWordEmbeddings) owner.Remove("lm_head.weight");
        var extra = owner.Keys.Where(k => !expected.ContainsKey(k)).Order().ToList();
        if (extra.Count > 0)
            throw new InvalidDataException($"'{owner[extra[0]].Path}' holds tensors this model does not have: {string.Join(", ", extra.Take(5))}{(extra.Count > 5 ? ", ..." : "")} (config mismatch?).");
        var missing = expected.Keys.Where(k => !owner.ContainsKey(k)).ToList();
        if (missing.Count > 0)
            throw new InvalidDataException($"The weights lack tensor '{missing[0]}'{(missing.Count > 1 ? $" and {missing.Count - 1} more" : "")} (searched {string.Join(", ", files.Select(f => $"'{f.Path}'"))}).");
        foreach (var (name, p) in expected) owner[name].CopyInto(name, p);
    }

    /// <summary>
    /// The one weight loader of every model directory layout (LoopRpt, Hugging Face, single file or shards): a model of
    /// <paramref name="config"/> created on <paramref name="device"/> in <paramref name="dtype"/> (Float32 or BFloat16) whose
    /// every parameter is read from <paramref name="directory"/>, one tensor at a time (stored F32, BF16 and F16 convert).
    /// Returns the model, the files read and the stored dtype (F32, BF16, F16, or "mixed").
    /// </summary>
    /// <exception cref="FileNotFoundException">No weights, or a shard the index names is missing.</exception>
    /// <exception cref="InvalidDataException">Missing, unexpected or mis-shaped tensors, or a stored dtype other than F32/BF16/F16.</exception>
    public static (OuroForCausalLM Model, IReadOnlyList<string> Files, string StoredDType) LoadModel(
        OuroConfig config, string directory, Device? device, ScalarType dtype, BFloat16Compute compute = BFloat16Compute.Auto)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16))
            throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "A model loads in Float32 or BFloat16.");
        var files = OpenFiles(directory);
        OuroForCausalLM? model = null;
        try
        {
            var stored = files.SelectMany(f => f.Tensors.Values.Select(t => t.DType)).Distinct().ToList();
            foreach (var bad in stored.Where(d => d is not ("F32" or "BF16" or "F16")))
                throw new InvalidDataException($"'{files.First(f => f.Tensors.Values.Any(t => t.DType == bad)).Path}' stores {bad} tensors; expected F32, BF16 or F16 weights.");
            // The load overwrites every parameter (a missing tensor is an error), so no initial weights are drawn.
            model = new OuroForCausalLM(config, device, dtype, initialize: false) { BFloat16Compute = compute };
            Load(model, files);
            return (model, files.Select(f => f.Path).ToList(), stored.Count == 1 ? stored[0] : "mixed");
        }
        catch
        {
            model?.Dispose();
            throw;
        }
        finally
        {
            foreach (var f in files) f.Dispose();
        }
    }

    /// <summary>Opens model.safetensors (the caller disposes the files), or every shard named by model.safetensors.index.json (checked against the shards).</summary>
    public static List<SafeTensorsFile> OpenFiles(string dir)
    {
        var indexPath = Path.Combine(dir, IndexFileName);
        var singlePath = Path.Combine(dir, FileName);
        if (File.Exists(indexPath))
        {
            var map = ReadWeightMap(indexPath);
            var files = new List<SafeTensorsFile>();
            try
            {
                foreach (var shard in map.Values.Distinct(StringComparer.Ordinal))
                {
                    var shardPath = Path.Combine(dir, shard);
                    if (!File.Exists(shardPath))
                        throw new FileNotFoundException($"'{indexPath}' maps tensor '{map.First(kv => kv.Value == shard).Key}' to '{shard}', which does not exist.", shardPath);
                    files.Add(SafeTensors.Open(shardPath));
                }
                foreach (var f in files)
                {
                    var shard = Path.GetFileName(f.Path);
                    foreach (var key in f.Tensors.Keys)
                        if (!map.TryGetValue(key, out var mapped) || mapped != shard)
                            throw new InvalidDataException($"Tensor '{key}' is in '{f.Path}' but '{indexPath}' maps it to {(mapped is null ? "no shard" : $"'{mapped}'")}.");
                }
                foreach (var (key, shard) in map)
                    if (!files.First(f => Path.GetFileName(f.Path) == shard).Tensors.ContainsKey(key))
                        throw new InvalidDataException($"'{indexPath}' maps tensor '{key}' to '{shard}', which does not hold it.");
                return files;
            }
            catch
            {
                foreach (var f in files) f.Dispose();
                throw;
            }
        }
        if (File.Exists(singlePath)) return [SafeTensors.Open(singlePath)];
        var pickled = Directory.EnumerateFiles(dir, "pytorch_model*.bin").Any();
        throw new FileNotFoundException(
            $"'{dir}' has neither {FileName} nor {IndexFileName}" +
            (pickled ? "; it holds PyTorch pickle weights (pytorch_model*.bin), which are not read: convert them to safetensors first." : "."),
            singlePath);
    }

    /// <summary>Parses the <c>weight_map</c> of an index file: tensor key → shard file name.</summary>
    public static IReadOnlyDictionary<string, string> ReadWeightMap(string indexPath)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(File.ReadAllText(indexPath)); }
        catch (JsonException e) { throw new InvalidDataException($"'{indexPath}' is not valid JSON ({e.Message}).", e); }
        if (root?["weight_map"] is not JsonObject weightMap)
            throw new InvalidDataException($"'{indexPath}' has no 'weight_map' object.");
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in weightMap)
        {
            var shard = value is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : null;
            if (string.IsNullOrEmpty(shard) || shard != Path.GetFileName(shard))
                throw new InvalidDataException($"'{indexPath}': weight_map entry '{key}' is not a file name in the same directory.");
            map[key] = shard;
        }
        return map;
    }
}
