using LoopRpt.Checkpoints;
using LoopRpt.MLNet;
using LoopRpt.Model;
using Microsoft.ML;
using Microsoft.ML.Data;
using static TorchSharp.torch;

namespace LoopRpt.Tests.MLNet;

public sealed class Doc
{
    [LoadColumn(0)] public string Text { get; set; } = "";
}

public sealed class TokenDoc
{
    [VectorType] public int[] Tokens { get; set; } = [];
}

/// <summary>What a prediction engine returns.</summary>
public sealed class Scored
{
    public float LogLikelihood { get; set; }
    public float[] TokenLogProbabilities { get; set; } = [];
    public float[] ExitSteps { get; set; } = [];
    public float MeanExitStep { get; set; }
    public float Perplexity { get; set; }
    public float ComputeFraction { get; set; }
    public float[] StepCorrectCounts { get; set; } = [];
    public int TokenCount { get; set; }
}

internal static class MlNetTestData
{
    private static readonly string[] Subjects = ["the cat", "a dog", "the bird", "my friend", "the old man", "a small child"];
    private static readonly string[] Verbs = ["sat on", "looked at", "ran to", "jumped over", "walked past"];
    private static readonly string[] Objects = ["the mat", "a tree", "the river", "the red house", "a quiet garden"];

    /// <summary>Deterministic, learnable sentences.</summary>
    public static List<Doc> Docs(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ =>
            new Doc { Text = $"{Subjects[rng.Next(Subjects.Length)]} {Verbs[rng.Next(Verbs.Length)]} {Objects[rng.Next(Objects.Length)]}." }).ToList();
    }

    public static OuroConfig TinyConfig(int vocab, int loops = 3) => new()
    {
        VocabSize = vocab, HiddenSize = 32, IntermediateSize = 64, NumHiddenLayers = 1, NumAttentionHeads = 4,
        NumKeyValueHeads = 2, TotalUtSteps = loops, RopeTheta = 10000, MaxPositionEmbeddings = 128,
    };

    /// <summary>A tiny random model saved as a LoopRpt model directory.</summary>
    public static string SaveTinyModel(int vocab, int loops = 3, long seed = 5)
    {
        var dir = TempDir("model");
        using var g = new Generator((ulong)seed);
        using var lm = new OuroForCausalLM(TinyConfig(vocab, loops), generator: g);
        // Make the gate informative so Q-exit picks different steps for different tokens.
        using (no_grad()) lm.Backbone.early_exit_gate.weight!.mul_(40);
        ModelDirectory.Save(dir, lm, new ModelMeta());
        return dir;
    }

    public static List<TokenDoc> TokenDocs(int n, int vocab, int seed, int maxLen = 40)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(i => new TokenDoc { Tokens = Enumerable.Range(0, i % 7 == 3 ? 1 : 2 + rng.Next(maxLen - 2)).Select(_ => rng.Next(vocab)).ToArray() }).ToList();
    }

    public static string TempDir(string tag)
    {
        var d = Path.Combine(Path.GetTempPath(), $"looprpt-{tag}-{Guid.NewGuid():N}");
        return d;
    }

    public static void Delete(params string?[] paths)
    {
        foreach (var p in paths)
        {
            if (p is null) continue;
            if (Directory.Exists(p)) Directory.Delete(p, true);
            else if (File.Exists(p)) File.Delete(p);
        }
    }

    /// <summary>Column names and types of a schema (for estimator-vs-fitted schema checks).</summary>
    public static List<(string, string)> Describe(DataViewSchema schema)
        => schema.Where(c => !c.IsHidden).Select(c => (c.Name, c.Type.ToString()!)).ToList();

    public static List<(string, string)> Describe(SchemaShape shape)
        => shape.Select(c => (c.Name, c.Kind == SchemaShape.Column.VectorKind.Scalar ? c.ItemType.ToString()! : $"Vector<{c.ItemType}>")).ToList();

    /// <summary>DataViewSchema description in SchemaShape terms (variable and fixed vectors both "Vector&lt;T&gt;").</summary>
    public static List<(string, string)> DescribeAsShape(DataViewSchema schema)
        => schema.Where(c => !c.IsHidden).Select(c => (c.Name, c.Type is VectorDataViewType v ? $"Vector<{v.ItemType}>" : c.Type.ToString()!)).ToList();

    /// <summary>SchemaShape of a schema (ML.NET's SchemaShape.Create is internal; EstimatorChain.Fit uses it the same way).</summary>
    public static SchemaShape Shape(DataViewSchema schema)
        => (SchemaShape)typeof(SchemaShape).GetMethod("Create", System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic, [typeof(DataViewSchema)])!
            .Invoke(null, [schema])!;

    public static T[] Column<T>(MLContext ml, IDataView view, string name)
        => view.GetColumn<T>(name).ToArray();
}
