using System.ComponentModel;
using LoopRpt.Inference;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;

namespace LoopRpt.MLNet.Persistence;

// The featurizer's portable twin (see Twin.cs for the scheme):
//   ConvertType (tokens → Int32) → CustomMapping "LoopRpt.TokensStateKey.v1" → ValueMapping key → scorer state JSON
//   → CustomMapping "LoopRpt.Features{N}.v1" → CopyColumns (internal → user name) → DropColumns.
// ML.NET rebuilds a CustomMapping from its contract name alone, so the output vector's length must be fixed by the
// output class: one class per supported length N (FeatureSizes). A model of hidden size H produces vectors of the
// smallest N >= H, zero-padded after H (the presets' sizes, 64, 256 and 2048, need no padding).
// Format history: v1 — mean-pooled, L2-normalized exit states under the state's exit rule; rows cut to context_length.

/// <summary>Persistence plumbing (public only because ML.NET's CustomMapping requires it).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public interface IFeaturesOutput
{
    /// <summary>The feature vector.</summary>
    float[] Features { get; set; }
}

/// <summary>Persistence plumbing: computes one row's features with the model described by the state column.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public abstract class FeaturesMappingFactory<TOutput> : CustomMappingFactory<ScorerInput, TOutput> where TOutput : class, IFeaturesOutput, new()
{
    /// <inheritdoc/>
    public override Action<ScorerInput, TOutput> GetMapping() => static (i, o) =>
    {
        var engine = StateCache<ScoringEngine>.Get(i.State, static json => ScorerState.Parse(json).CreateEngine(), static e => !e.IsDisposed);
        o.Features = FeatureVectors.Compute(engine, [i.Tokens], FeatureVectors.SizeFor(engine.Model.Config.HiddenSize))[0];
    };
}

/// <summary>Persistence plumbing: 16 features.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class FeaturesOutput16 : IFeaturesOutput
{
    /// <summary>The 16-long feature vector (zero-padded after the model's hidden size).</summary>
    [ColumnName(Cols.Features), VectorType(16)] public float[] Features { get; set; } = new float[16];
}

/// <summary>Persistence plumbing: the 16-feature mapping.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class FeaturesMappingFactory16 : FeaturesMappingFactory<FeaturesOutput16>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Features16.v1";
}

/// <summary>Persistence plumbing: 32 features.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class FeaturesOutput32 : IFeaturesOutput
{
    /// <summary>The 32-long feature vector (zero-padded after the model's hidden size).</summary>
    [ColumnName(Cols.Features), VectorType(32)] public float[] Features { get; set; } = new float[32];
}

/// <summary>Persistence plumbing: the 32-feature mapping.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class FeaturesMappingFactory32 : FeaturesMappingFactory<FeaturesOutput32>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Features32.v1";
}

/// <summary>Persistence plumbing: 64 features.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class FeaturesOutput64 : IFeaturesOutput
{
    /// <summary>The 64-long feature vector (zero-padded after the model's hidden size).</summary>
    [ColumnName(Cols.Features), VectorType(64)] public float[] Features { get; set; } = new float[64];
}

/// <summary>Persistence plumbing: the 64-feature mapping.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class FeaturesMappingFactory64 : FeaturesMappingFactory<FeaturesOutput64>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Features64.v1";
}

/// <summary>Persistence plumbing: 128 features.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class FeaturesOutput128 : IFeaturesOutput
{
    /// <summary>The 128-long feature vector (zero-padded after the model's hidden size).</summary>
    [ColumnName(Cols.Features), VectorType(128)] public float[] Features { get; set; } = new float[128];
}

/// <summary>Persistence plumbing: the 128-feature mapping.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class FeaturesMappingFactory128 : FeaturesMappingFactory<FeaturesOutput128>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Features128.v1";
}

/// <summary>Persistence plumbing: 256 features.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class FeaturesOutput256 : IFeaturesOutput
{
    /// <summary>The 256-long feature vector (zero-padded after the model's hidden size).</summary>
    [ColumnName(Cols.Features), VectorType(256)] public float[] Features { get; set; } = new float[256];
}

/// <summary>Persistence plumbing: the 256-feature mapping.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class FeaturesMappingFactory256 : FeaturesMappingFactory<FeaturesOutput256>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Features256.v1";
}

/// <summary>Persistence plumbing: 512 features.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class FeaturesOutput512 : IFeaturesOutput
{
    /// <summary>The 512-long feature vector (zero-padded after the model's hidden size).</summary>
    [ColumnName(Cols.Features), VectorType(512)] public float[] Features { get; set; } = new float[512];
}

/// <summary>Persistence plumbing: the 512-feature mapping.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class FeaturesMappingFactory512 : FeaturesMappingFactory<FeaturesOutput512>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Features512.v1";
}

/// <summary>Persistence plumbing: 768 features.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class FeaturesOutput768 : IFeaturesOutput
{
    /// <summary>The 768-long feature vector (zero-padded after the model's hidden size).</summary>
    [ColumnName(Cols.Features), VectorType(768)] public float[] Features { get; set; } = new float[768];
}

/// <summary>Persistence plumbing: the 768-feature mapping.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class FeaturesMappingFactory768 : FeaturesMappingFactory<FeaturesOutput768>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Features768.v1";
}

/// <summary>Persistence plumbing: 1024 features.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class FeaturesOutput1024 : IFeaturesOutput
{
    /// <summary>The 1024-long feature vector (zero-padded after the model's hidden size).</summary>
    [ColumnName(Cols.Features), VectorType(1024)] public float[] Features { get; set; } = new float[1024];
}

/// <summary>Persistence plumbing: the 1024-feature mapping.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class FeaturesMappingFactory1024 : FeaturesMappingFactory<FeaturesOutput1024>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Features1024.v1";
}

/// <summary>Persistence plumbing: 1536 features.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class FeaturesOutput1536 : IFeaturesOutput
{
    /// <summary>The 1536-long feature vector (zero-padded after the model's hidden size).</summary>
    [ColumnName(Cols.Features), VectorType(1536)] public float[] Features { get; set; } = new float[1536];
}

/// <summary>Persistence plumbing: the 1536-feature mapping.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class FeaturesMappingFactory1536 : FeaturesMappingFactory<FeaturesOutput1536>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Features1536.v1";
}

/// <summary>Persistence plumbing: 2048 features.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class FeaturesOutput2048 : IFeaturesOutput
{
    /// <summary>The 2048-long feature vector (zero-padded after the model's hidden size).</summary>
    [ColumnName(Cols.Features), VectorType(2048)] public float[] Features { get; set; } = new float[2048];
}

/// <summary>Persistence plumbing: the 2048-feature mapping.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class FeaturesMappingFactory2048 : FeaturesMappingFactory<FeaturesOutput2048>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Features2048.v1";
}

/// <summary>Persistence plumbing: 2560 features.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class FeaturesOutput2560 : IFeaturesOutput
{
    /// <summary>The 2560-long feature vector (zero-padded after the model's hidden size).</summary>
    [ColumnName(Cols.Features), VectorType(2560)] public float[] Features { get; set; } = new float[2560];
}

/// <summary>Persistence plumbing: the 2560-feature mapping.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class FeaturesMappingFactory2560 : FeaturesMappingFactory<FeaturesOutput2560>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Features2560.v1";
}

/// <summary>Persistence plumbing: 3072 features.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class FeaturesOutput3072 : IFeaturesOutput
{
    /// <summary>The 3072-long feature vector (zero-padded after the model's hidden size).</summary>
    [ColumnName(Cols.Features), VectorType(3072)] public float[] Features { get; set; } = new float[3072];
}

/// <summary>Persistence plumbing: the 3072-feature mapping.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class FeaturesMappingFactory3072 : FeaturesMappingFactory<FeaturesOutput3072>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Features3072.v1";
}

/// <summary>Persistence plumbing: 4096 features.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class FeaturesOutput4096 : IFeaturesOutput
{
    /// <summary>The 4096-long feature vector (zero-padded after the model's hidden size).</summary>
    [ColumnName(Cols.Features), VectorType(4096)] public float[] Features { get; set; } = new float[4096];
}

/// <summary>Persistence plumbing: the 4096-feature mapping.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class FeaturesMappingFactory4096 : FeaturesMappingFactory<FeaturesOutput4096>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Features4096.v1";
}

/// <summary>Feature sizes, computation and the featurizer's twin.</summary>
internal static class FeatureVectors
{
    /// <summary>The vector lengths a saved featurizer can have.</summary>
    public static readonly int[] Sizes = [16, 32, 64, 128, 256, 512, 768, 1024, 1536, 2048, 2560, 3072, 4096];

    /// <summary>The feature vector length for hidden size <paramref name="hidden"/>: the smallest supported size that holds it.</summary>
    public static int SizeFor(int hidden)
        => Sizes.FirstOrDefault(s => s >= hidden) is var n and > 0 ? n
            : throw new NotSupportedException($"Hidden size {hidden} exceeds the largest feature vector LoopRpt can save ({Sizes[^1]}).");

    /// <summary>
    /// Mean-pooled, unit-norm exit states of <paramref name="rows"/> (cut to the engine's context length) under the
    /// engine's exit rule, zero-padded to <paramref name="size"/>; an empty row gives zeros.
    /// </summary>
    public static float[][] Compute(ScoringEngine engine, IReadOnlyList<int[]?> rows, int size)
    {
        var result = new float[rows.Count][];
        var present = new List<int>();
        var sequences = new List<IReadOnlyList<long>>();
        int context = Math.Min(engine.ContextLength, engine.Model.Config.MaxPositionEmbeddings);
        for (int i = 0; i < rows.Count; i++)
        {
            result[i] = new float[size];
            if (rows[i] is not { Length: > 0 } r) continue;
            present.Add(i);
            sequences.Add(r.Take(context).Select(t => (long)t).ToArray());
        }
        if (sequences.Count == 0) return result;
        var embedder = new ExitStateEmbedder(engine.Model, new ExitStateEmbedderOptions { Exit = engine.ExitMode, BatchSize = engine.BatchSize });
        var pooled = embedder.Embed(sequences);
        for (int j = 0; j < present.Count; j++) pooled[j].Vector.CopyTo(result[present[j]], 0);
        return result;
    }

    public static IEstimator<ITransformer> Twin(MLContext ml, string tokenColumn, string outputColumn, string stateJson, int size)
    {
        IEstimator<ITransformer> mapping = size switch
        {
            16 => ml.Transforms.CustomMapping(new FeaturesMappingFactory16().GetMapping(), FeaturesMappingFactory16.Contract),
            32 => ml.Transforms.CustomMapping(new FeaturesMappingFactory32().GetMapping(), FeaturesMappingFactory32.Contract),
            64 => ml.Transforms.CustomMapping(new FeaturesMappingFactory64().GetMapping(), FeaturesMappingFactory64.Contract),
            128 => ml.Transforms.CustomMapping(new FeaturesMappingFactory128().GetMapping(), FeaturesMappingFactory128.Contract),
            256 => ml.Transforms.CustomMapping(new FeaturesMappingFactory256().GetMapping(), FeaturesMappingFactory256.Contract),
            512 => ml.Transforms.CustomMapping(new FeaturesMappingFactory512().GetMapping(), FeaturesMappingFactory512.Contract),
            768 => ml.Transforms.CustomMapping(new FeaturesMappingFactory768().GetMapping(), FeaturesMappingFactory768.Contract),
            1024 => ml.Transforms.CustomMapping(new FeaturesMappingFactory1024().GetMapping(), FeaturesMappingFactory1024.Contract),
            1536 => ml.Transforms.CustomMapping(new FeaturesMappingFactory1536().GetMapping(), FeaturesMappingFactory1536.Contract),
            2048 => ml.Transforms.CustomMapping(new FeaturesMappingFactory2048().GetMapping(), FeaturesMappingFactory2048.Contract),
            2560 => ml.Transforms.CustomMapping(new FeaturesMappingFactory2560().GetMapping(), FeaturesMappingFactory2560.Contract),
            3072 => ml.Transforms.CustomMapping(new FeaturesMappingFactory3072().GetMapping(), FeaturesMappingFactory3072.Contract),
            4096 => ml.Transforms.CustomMapping(new FeaturesMappingFactory4096().GetMapping(), FeaturesMappingFactory4096.Contract),
            _ => throw new NotSupportedException($"No saved feature mapping of length {size}."),
        };
        return ml.Transforms.Conversion.ConvertType(Cols.Tokens, tokenColumn, DataKind.Int32)
            .Append(ml.Transforms.CustomMapping(new TokensStateKeyFactory().GetMapping(), TokensStateKeyFactory.Contract))
            .Append(ml.Transforms.Conversion.MapValue(Cols.ScorerState, [new KeyValuePair<string, string>(Cols.StateKeyValue, stateJson)], Cols.StateKey))
            .Append(mapping)
            .Append(ml.Transforms.CopyColumns(outputColumn, Cols.Features))
            .Append(ml.Transforms.DropColumns(Cols.Tokens, Cols.StateKey, Cols.ScorerState, Cols.Features));
    }
}
