using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Checkpoints;

/// <summary>Moves an <see cref="OuroForCausalLM"/>'s parameters to and from safetensors under the reference key names.</summary>
public static class ModelWeights
{
    public const string FileName = "model.safetensors";

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
}
