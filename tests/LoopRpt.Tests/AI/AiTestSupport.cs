using System.Text.Json.Nodes;
using LoopRpt.AI;
using LoopRpt.Hosting;
using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Tokenization;

namespace LoopRpt.Tests.AI;

/// <summary>
/// A 64-token test tokenizer in which every id is one printable character (so any generated text is readable and
/// every stop string is a whole number of tokens); id 63 is end-of-text.
/// </summary>
internal sealed class LettersTokenizer : ITokenizerService
{
    public const string Alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
    public const int EndOfText = 63;

    public int VocabSize => 64;
    public int? EndOfTextId => EndOfText;

    public int[] Encode(string text)
        => text.Select(c => Alphabet.IndexOf(c) is var i and >= 0 ? i : Alphabet.Length - 1).ToArray();

    public string Decode(IEnumerable<int> ids) => string.Concat(ids.Where(i => i is >= 0 and < EndOfText).Select(i => Alphabet[i]));

    public JsonObject Describe() => new() { ["kind"] = "letters" };
}

internal static class AiTestSupport
{
    /// <summary>A tiny model with spread exit steps (so adaptive exit saves loops) and the letters tokenizer.</summary>
    public static LoopRptModel Model(long seed = 1, double gateScale = 40)
        => LoopRptModel.FromModel(Inference.InferenceTestUtil.SpreadGateModel(gateScale: gateScale, seed: seed),
            new LettersTokenizer().ToTextCodec(), "tiny-test");

    /// <summary>A prompt as every face encodes it: the start id, then the text (DocumentTokens).</summary>
    public static long[] Ids(this TextCodec codec, string text) => codec.EncodePrompt(text).Select(i => (long)i).ToArray();
}
