using System.Text;
using LoopRpt.AI;
using LoopRpt.Hosting;
using LoopRpt.Interop;
using LoopRpt.Model;
using LoopRpt.Tests.Interop;
using LoopRpt.Tokenization;
using Microsoft.Extensions.AI;

namespace LoopRpt.Tests.AI;

public class ChatTemplateTests
{
    [Fact]
    public void OuroTokenizersGetChatMlWithImEndAsStopToken()
    {
        // The reference tokenizer.json has <|endoftext|> = 0, <|im_start|> = 1, <|im_end|> = 2 as added tokens.
        var hf = HfTokenizer.Parse(Encoding.UTF8.GetBytes(ReferenceLayout.TokenizerJson()), "test/tokenizer.json");
        var codec = TextCodec.From(hf, new OuroConfig { EosTokenId = 0 });
        Assert.Equal(ChatTemplateKind.ChatMl, ChatTemplate.Resolve(ChatTemplateKind.Auto, codec));
        var prompt = ChatTemplate.Render([new ChatMessage(ChatRole.System, "hi"), new ChatMessage(ChatRole.User, "yo")], codec, ChatTemplateKind.Auto);
        long[] E(string s) => hf.Encode(s).Select(i => (long)i).ToArray();
        long[] expected = [1, .. E("system\nhi"), 2, .. E("\n"), 1, .. E("user\nyo"), 2, .. E("\n"), 1, .. E("assistant\n")];
        Assert.Equal(expected, prompt.Ids);
        Assert.Equal([0L, 2L], prompt.StopTokens);
        Assert.Empty(prompt.StopStrings);
    }

    [Fact]
    public void TokenizersWithoutChatTokensGetThePlainTemplate()
    {
        var codec = new ByteTokenizerService().ToTextCodec();
        Assert.Equal(ChatTemplateKind.Plain, ChatTemplate.Resolve(ChatTemplateKind.Auto, codec));
        var prompt = ChatTemplate.Render([new ChatMessage(ChatRole.System, "be brief"), new ChatMessage(ChatRole.User, "hi")], codec, ChatTemplateKind.Auto);
        Assert.Equal(256L, prompt.Ids[0]);                             // the start id (DocumentTokens): end-of-text, as every face prepends
        Assert.Equal("System: be brief\nUser: hi\nAssistant:", Encoding.UTF8.GetString(prompt.Ids.Skip(1).Select(i => (byte)i).ToArray()));
        Assert.Equal([256L], prompt.StopTokens);
        Assert.Equal(["\nUser:"], prompt.StopStrings);
        Assert.Throws<InvalidOperationException>(() => ChatTemplate.Render([new ChatMessage(ChatRole.User, "hi")], codec, ChatTemplateKind.ChatMl));
    }
}
