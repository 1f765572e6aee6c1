using System.Text.Json.Nodes;
using LoopRpt.Tokenization;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.MLNet;

/// <summary>
/// The annotations a fitted <see cref="TokenizingTransformer"/> puts on its token column: the tokenizer's vocabulary size
/// and description. A <see cref="LoopedLmTrainerEstimator"/> further down the same pipeline reads them from its input
/// column (ML.NET's way of passing what a column means along the chain), so it sizes the model's vocabulary from the
/// tokenizer and records the tokenizer in meta.json without being told. A model reloaded from a zip tokenizes without
/// them; only a freshly fitted transformer annotates.
/// </summary>
public static class TokenizerAnnotations
{
    /// <summary>Int32 annotation: the tokenizer's vocabulary size.</summary>
    public const string VocabularySize = "LoopRpt.TokenizerVocabularySize";

    /// <summary>Text annotation: the tokenizer's <see cref="TokenizerSpec"/> as JSON (what meta.json records).</summary>
    public const string Description = "LoopRpt.TokenizerDescription";

    /// <summary>The annotations describing <paramref name="tokenizer"/> (the description is serialized when first read).</summary>
    internal static DataViewSchema.Annotations For(LoopRptTokenizer tokenizer)
    {
        var json = new Lazy<string>(() => tokenizer.Spec.ToJsonObject().ToJsonString());
        var b = new DataViewSchema.Annotations.Builder();
        b.AddPrimitiveValue(VocabularySize, NumberDataViewType.Int32, tokenizer.VocabularySize);
        b.Add(Description, TextDataViewType.Instance, (ref ReadOnlyMemory<char> value) => value = json.Value.AsMemory());
        return b.ToAnnotations();
    }

    /// <summary>The tokenizer <paramref name="column"/> was produced by, or null when it carries no tokenizer annotations.</summary>
    internal static (int VocabularySize, JsonObject Description)? Read(DataViewSchema.Column column)
    {
        var schema = column.Annotations.Schema;
        if (schema.GetColumnOrNull(VocabularySize) is not { } size || !size.Type.Equals(NumberDataViewType.Int32)
            || schema.GetColumnOrNull(Description) is not { } description || description.Type is not TextDataViewType)
            return null;
        int vocabulary = 0;
        column.Annotations.GetValue(VocabularySize, ref vocabulary);
        ReadOnlyMemory<char> json = default;
        column.Annotations.GetValue(Description, ref json);
        return (vocabulary, (JsonObject)JsonNode.Parse(json.ToString())!);
    }

    /// <summary><paramref name="schema"/> with <paramref name="annotations"/> added to the visible column <paramref name="column"/>.</summary>
    internal static DataViewSchema Annotate(DataViewSchema schema, string column, DataViewSchema.Annotations annotations)
    {
        int target = schema[column].Index;
        var b = new DataViewSchema.Builder();
        foreach (var c in schema)
        {
            if (c.Index != target)
            {
                b.AddColumn(c.Name, c.Type, c.Annotations);
                continue;
            }
            var merged = new DataViewSchema.Annotations.Builder();
            merged.Add(c.Annotations, name => annotations.Schema.GetColumnOrNull(name) is null);
            merged.Add(annotations, _ => true);
            b.AddColumn(c.Name, c.Type, merged.ToAnnotations());
        }
        return b.ToSchema();
    }
}
